"""Recipes: the commands that made a shipped model, as a script that runs them in order (or, with
`--dry-run`, prints them). A recipe names its options once; its tests check them against the card
of the model it made, so the script and the shipped card cannot drift apart unnoticed.

- `three_sources`: the shipped `age_resnet10_int8-2a2e422d` (UTKFace + All-Age-Faces + APPA-REAL,
  one 96 px ResNet-10 distilled from faceres-deep, in a 112 px file).
"""
