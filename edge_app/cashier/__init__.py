"""The cashier's alert window (`agecheck display` or inside the till service)."""
