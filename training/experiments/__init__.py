"""Experiments: training tools and options that were tried and not shipped, kept runnable so a
result in docs/model.md can be re-run. The shipped recipe (training.recipes) uses none of them.

- `soup`: averaging the weights of several runs ("model soup").
- `fairness`: `train` with `--balance-sex`, `--sex-bias` and `--adult-gate`, aimed at the gap
  between women and men sent to ID.
- `teacher_probe`: heads on the frozen teacher's embeddings, ranked at the gate.
- `teacher_tune`: faceres-deep rebuilt in Keras and fine-tuned for age (did not beat the frozen
  teacher; docs/model.md).
"""
