"""Check: one age check, from a restricted scan to its events. Owns the choice of frames (up to
max_frames from the ring buffer just before the scan, newest first; fresh ones after it when
extra_frames asks for them or the buffer held no usable face), the early decision once
agree_frames usable frames agree, the per-frame path edge_app.vision.faces (detect, shopper, align,
quality gate) -> edge_app.vision.model, the time budget, the call to policy.decide_calibrated, and the
check/alert event documents with per-stage latency (ms: queue = waiting for the worker, wait =
waiting for camera frames, faces, model, policy, total = scan to decision).

Within a check the shopper is followed from frame to frame (faces.Follower: full search on the
first frame, then a short look around the last box), and with check.parallel the next frame's
face look runs on a second thread while the model reads the current frame; the frames, their
order and so the decision are those of the one-thread path. faces and model are then each the
sum of their own work, which overlaps in time. Nothing visual leaves this module: frames and
crops are dropped when run() returns (a look-ahead the decision no longer needed drops its own
when it ends, within one frame's look); the events carry numbers only.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import statistics
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypedDict

import cv2

from edge_app.config import Config, ConfigError, PolicyConfig
from edge_app.core import event_parts, events
from edge_app.core.policy import ChallengeRule, PolicyResult, Probs, decide_calibrated
from edge_app.core.words import Decision, GateReason, PolicyRule
from edge_app.till.capture import Frame, FrameBuffer, FrameError
from edge_app.till.triggers import Trigger
from edge_app.vision.errors import CropSizeError, ImageError, ModelError
from edge_app.vision.faces import FacePipeline, Follower
from edge_app.vision.found import FrameFaces, Quality
from edge_app.vision.model import AgeModel, load_for_faces, require_crop_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckOutcome:
    check: events.CheckEvent
    alert: events.AlertEvent | None  # when the decision is not approve
    result: PolicyResult
    # The shopper's face box (x, y, w, h in frame pixels) in each frame that gave an age. Kept in
    # memory for diagnostics and tests; never published.
    shopper_boxes: tuple[tuple[float, float, float, float], ...]


def challenge_rule(policy: PolicyConfig, min_age: int | None = None) -> ChallengeRule:
    """The policy settings as the rule one check is decided by. The item's legal age (`min_age`,
    21 for some items) may be above the configured one; Challenge 25 never drops below it."""
    if min_age is None:
        return ChallengeRule(policy.legal_age, policy.challenge_age, policy.margin_years)
    return ChallengeRule(min_age, max(policy.challenge_age, min_age), policy.margin_years)


def load_model(path: str, threads: int, crop_size: int) -> AgeModel:
    """The model the till and `agecheck estimate` run; what makes it unusable is a ConfigError
    naming the setting to change."""
    try:
        model = load_for_faces(path, threads, crop_size)
    except ModelError as exc:
        raise ConfigError(f"model.path: {exc}") from None
    except CropSizeError as exc:
        raise _crop_size_setting(exc) from None
    return model


def require_model_crops(model: AgeModel, crop_size: int) -> None:
    """A model handed in (tests, benchmarks) checked as load_model checks the one it loads."""
    try:
        require_crop_size(model, crop_size)
    except CropSizeError as exc:
        raise _crop_size_setting(exc) from None


def _crop_size_setting(exc: CropSizeError) -> ConfigError:
    return ConfigError(f"faces.output_size: {exc}; set faces.output_size: {exc.input_size}")


def model_threads(cfg: Config) -> int:
    """Threads for the model's interpreter. With check.parallel the face look of the next frame
    runs on its own core while the model reads this one, so the model keeps to the other cores:
    two threads on two cores would make it fight MediaPipe for the one the look is using."""
    if not cfg.check.parallel:
        return cfg.model.threads
    return max(1, min(cfg.model.threads, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True)
class _Look:
    """The face path's answer for one frame: what it found (None: an unusable frame) and how
    long it took (ms)."""

    faces: FrameFaces | None
    ms: float


def spread(frames: list[Frame], n: int) -> list[Frame]:
    """At most n frames, evenly spaced, always including the newest."""
    if len(frames) <= n:
        return list(frames)
    if n == 1:
        return [frames[-1]]
    step = (len(frames) - 1) / (n - 1)
    return [frames[round(i * step)] for i in range(n)]


class _QualityFigures(TypedDict, total=False):
    """CheckEvent's quality fields, all or none."""

    sharpness: float
    brightness: float
    eyes_px: float


def _quality(measured: list[Quality]) -> _QualityFigures:
    """The check's quality figures (CheckEvent.sharpness, brightness, eyes_px): the median of what
    the gate measured, refused faces included, so a camera gone blurred or dark shows in them."""
    if not measured:
        return {}
    return {
        "sharpness": round(statistics.median(q.sharpness for q in measured), 1),
        "brightness": round(statistics.median(q.brightness for q in measured), 1),
        "eyes_px": round(statistics.median(q.iod_px for q in measured), 1),
    }


def _latency(ms: Mapping[str, float]) -> event_parts.Latency:
    """The check's `latency_ms`: every stage _Tally times, to a tenth of a millisecond."""
    r = {k: round(v, 1) for k, v in ms.items()}
    return event_parts.Latency(
        queue=r["queue"], wait=r["wait"], faces=r["faces"], model=r["model"], policy=r["policy"], total=r["total"]
    )


@dataclass
class _Tally:
    ages: list[float] = dataclasses.field(default_factory=list)
    probs: list[Probs] = dataclasses.field(default_factory=list)  # each frame's age distribution
    boxes: list[tuple[float, float, float, float]] = dataclasses.field(default_factory=list)
    rejected: collections.Counter[GateReason] = dataclasses.field(default_factory=collections.Counter)
    measured: list[Quality] = dataclasses.field(default_factory=list)  # the gate's measures, every aligned face
    faces_seen: int = 0
    frames_seen: int = 0
    after: int = 0
    ms: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"queue": 0.0, "wait": 0.0, "faces": 0.0, "model": 0.0, "policy": 0.0, "total": 0.0}
    )


class CheckRunner:
    """Runs checks one at a time (the service has one worker thread)."""

    def __init__(
        self,
        cfg: Config,
        buffer: FrameBuffer,
        pipeline: FacePipeline,
        model: AgeModel,
        camera_status: Callable[[], str] = lambda: "up",
        clock: Callable[[], float] = time.monotonic,
    ):
        self.cfg = cfg
        self.buffer = buffer
        self.pipeline = pipeline
        self.model = model
        self.camera_status = camera_status
        self.clock = clock
        # One thread for the look-ahead: looks stay in frame order, one at a time (the follower
        # of a check and MediaPipe's graphs are not re-entrant).
        self._ahead = ThreadPoolExecutor(1, thread_name_prefix="check-faces") if cfg.check.parallel else None

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.shutdown(wait=True, cancel_futures=True)

    def _look(self, frame: Frame, follower: Follower) -> _Look:
        """The face path for one frame; runs on the caller's thread or the look-ahead thread."""
        a = self.clock()
        try:
            # A frame kept as the camera's JPEG is decoded here, on the look's thread.
            rgb = cv2.cvtColor(frame.bgr(), cv2.COLOR_BGR2RGB)
            # The first frame of a check takes the whole shared face path (detect, choose the
            # shopper, refine, align, gate) exactly as training uses it; later ones follow the
            # shopper with the same second look, so the model sees the crops it was trained on.
            res: FrameFaces | None = follower.look(rgb)
        except (ImageError, FrameError) as exc:
            log.warning("skipping an unusable camera frame: %s", exc)
            res = None
        return _Look(res, (self.clock() - a) * 1000)

    def _use(self, look: _Look, t: _Tally) -> None:
        """The model on a frame's shopper, and the tally."""
        t.ms["faces"] += look.ms
        res = look.faces
        if res is None:
            return
        t.faces_seen = max(t.faces_seen, len(res.faces))
        aligned = res.aligned
        if aligned is None:
            return
        t.measured.append(aligned.quality)
        if not aligned.ok:
            for rejection in aligned.rejections:
                t.rejected[rejection.reason] += 1
            return
        b = self.clock()
        est = self.model.predict(aligned.crop)
        t.ms["model"] += (self.clock() - b) * 1000
        t.ages.append(est.age)
        if est.probs is not None:
            t.probs.append(est.probs)
        x, y, w, h = aligned.face.box
        t.boxes.append((float(x), float(y), float(w), float(h)))

    def run(self, trigger: Trigger, heartbeat: Callable[[], None] | None = None) -> CheckOutcome:
        cc = self.cfg.check
        beat = heartbeat or (lambda: None)
        started = self.clock()
        # The budget runs from when the worker picks the scan up, so a scan queued behind another
        # still gets a full look; the queueing time is reported as latency_ms.queue.
        deadline = started + cc.time_budget_ms / 1000.0
        t0 = trigger.received
        t = _Tally()
        t.ms["queue"] = max(0.0, started - t0) * 1000
        before = self.buffer.between(t0 - cc.lookback_seconds, t0)
        # Newest first: the shopper in front of the camera at the moment of the scan, and an
        # early decision (agree_frames) is then made on the frames closest to it.
        todo = collections.deque(reversed(spread(before, max(1, cc.max_frames - cc.extra_frames))))
        seen = before[-1].index if before else -1
        pol = self._policy(trigger)
        follower = Follower(self.pipeline, self.cfg.faces.full_search_every)
        ahead: Future[_Look] | None = None  # the look at todo[0], started while the model runs
        try:
            while True:
                if not todo:
                    if len(t.ages) >= cc.max_frames or (t.after >= cc.extra_frames and len(t.ages) >= cc.min_frames):
                        break
                    left = deadline - self.clock()
                    if left <= 0:
                        break
                    w = self.clock()
                    # The newest frame only: if the model is slower than the camera, stale frames are skipped.
                    f = self.buffer.wait_after(seen, min(left, 0.5))
                    t.ms["wait"] += (self.clock() - w) * 1000
                    beat()
                    if f is None:
                        continue
                    seen = f.index
                    todo.append(f)
                frame = todo.popleft()
                if frame.t > t0:
                    t.after += 1
                look = ahead.result() if ahead is not None else self._look(frame, follower)
                ahead = None
                if self._ahead is not None and todo:
                    # The next buffered frame's look runs on the other core while the model reads
                    # this one; it starts after this frame's look, so the track is the same.
                    ahead = self._ahead.submit(self._look, todo[0], follower)
                self._use(look, t)
                t.frames_seen += 1
                beat()
                if len(t.ages) >= cc.max_frames or self.clock() >= deadline:
                    break
                if t.after >= cc.extra_frames and self._agreed(t, pol):
                    break
        finally:
            if ahead is not None:
                # A look the decision no longer needs: dropped unused (one still running ends
                # within a frame's look, on its own thread, and its result is discarded).
                ahead.cancel()
        return self._outcome(trigger, t, pol)

    def _policy(self, trigger: Trigger) -> ChallengeRule:
        return challenge_rule(self.cfg.policy, trigger.min_age)

    def _decide(self, t: _Tally, pol: ChallengeRule, min_frames: int) -> PolicyResult:
        return decide_calibrated(t.ages, t.probs, pol, self.model.rules, min_frames)

    def _agreed(self, t: _Tally, pol: ChallengeRule) -> bool:
        """Enough usable frames, and each of them alone gives the decision they give together:
        more frames of the same person a fraction of a second apart would not change it."""
        cc = self.cfg.check
        if not cc.agree_frames or len(t.ages) < max(cc.agree_frames, cc.min_frames):
            return False
        together = self._decide(t, pol, cc.min_frames).decision
        singles = (_Tally(ages=[a], probs=t.probs[i : i + 1]) for i, a in enumerate(t.ages))
        return all(self._decide(one, pol, 1).decision == together for one in singles)

    def _outcome(self, trigger: Trigger, t: _Tally, pol_cfg: ChallengeRule) -> CheckOutcome:
        cfg = self.cfg
        p0 = self.clock()
        res = self._decide(t, pol_cfg, cfg.check.min_frames)
        end = self.clock()
        t.ms["policy"] = (end - p0) * 1000
        t.ms["total"] = (end - trigger.received) * 1000
        camera = self.camera_status()
        reason = res.reason
        if res.decision == Decision.NO_FACE:
            if camera != "up":
                reason = f"camera {camera}; {reason}"
            elif t.rejected:
                reason += "; faces rejected as " + ", ".join(f"{k} x{n}" for k, n in t.rejected.most_common(3))
            elif t.faces_seen == 0:
                reason += f"; no face in {t.frames_seen} frame(s)"
        # The POS's product name and operator travel only when it sent them (the fields are optional).
        # Each event is validated as it is built: one the schema refuses fails here, in the worker,
        # not later on publish.
        product = trigger.product
        check = events.CheckEvent(
            store_id=cfg.store_id,
            till_id=cfg.till_id,
            transaction_id=trigger.scan.transaction_id,
            # Both times: the till's (it timed the check) and the POS's, as it sent it (its clock may be off).
            trigger=event_parts.TriggerInfo(
                product, source=trigger.source, received_ts=trigger.received_ts, sent_ts=trigger.scan.sent_ts
            ),
            frames_seen=t.frames_seen,
            frames_used=res.frames_used,
            faces_seen=t.faces_seen,
            age=res.age,
            age_low=res.age_low,
            age_high=res.age_high,
            age_band=res.age_band,
            spread=res.spread,
            p_over=res.p_over,
            decision=res.decision,
            reason=reason,
            policy=event_parts.PolicyInfo(
                legal_age=res.legal_age,
                challenge_age=res.challenge_age,
                margin_years=cfg.policy.margin_years,
                min_frames=cfg.check.min_frames,
                rule=PolicyRule.CALIBRATED if res.p_over is not None else PolicyRule.MARGIN,
            ),
            model_id=self.model.model_id,
            latency_ms=_latency(t.ms),
            camera=camera,
            gate_rejections=dict(t.rejected),
            operator_id=trigger.scan.operator_id or None,
            **_quality(t.measured),
        )
        alert = None
        if res.decision != Decision.APPROVE:
            alert = events.AlertEvent(
                store_id=cfg.store_id,
                till_id=cfg.till_id,
                transaction_id=trigger.scan.transaction_id,
                check_event_id=check.event_id,
                decision=res.decision,
                age_band=res.age_band,
                age=res.age,
                item=product,
                reason=reason,
                # The window tells a camera fault from a shopper out of view even without the check.
                camera=camera,
                operator_id=trigger.scan.operator_id or None,
            )
        return CheckOutcome(check, alert, res, tuple(t.boxes))
