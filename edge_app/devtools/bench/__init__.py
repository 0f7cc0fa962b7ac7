"""Bench: `agecheck bench`. Measures what the till app costs the till PC, on real face photos
played as video (the public-domain astronaut photo shipped with agecheck by default, `--images DIR`
for a folder of photos) with the shipped model, and prints one table:

* per stage (detect, align, infer, aggregate, publish): median and p95 ms (stages.py; publish in
  latency.py), today's path (every frame searched in full) and issue 29's (the shopper followed
  within a check) on the same frames, with followed crops compared against full searches;
* whole 5-frame checks through both paths on the same frames, with their decisions compared
  (checks.py);
* trigger -> decision and trigger -> alert visible with the ring buffer warm (latency.py: a real
  service in this process, a real Mosquitto, the Tk window under Xvfb when there is no screen);
* checks per second on one core and on two (throughput.py: pinned child processes);
* idle CPU of the service at 30 fps, resident memory after warm-up, start-up to the retained
  `online` (service_figures.py: a real `agecheck run` child process; idle CPU and memory also
  for a child on today's configuration), model load times;
* the same per-frame inference for a float32 TFLite build of the model, and the int8 speed-up.

Targets (issues 6 and 29) are printed next to the figures, and today's figure with the ratio
where the run measured both (table.py); the bench reports, it does not fail
on a miss (speed targets are never unit-test thresholds). run.py runs it all; figures.py holds
the rows and renders them; video.py makes the camera's video; harness.py holds what the
measurements share. Frames and crops stay in memory; the only files written are the sample
videos and configs in a temporary folder, deleted on exit.
"""

from edge_app.devtools.bench.run import main

__all__ = ["main"]
