"""The till service (`agecheck run`): camera, POS triggers, the check, integrity watch and systemd notification."""
