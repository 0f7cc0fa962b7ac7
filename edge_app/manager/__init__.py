"""The store manager's side: the event feed (`agecheck feed`) and the report (`agecheck report`)."""
