"""agecheck: checkout-camera age check (Challenge 25) for supermarket tills."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# Files a till needs besides the code, copied into edge_app/data/ of the wheel from where the
# project keeps them, by name (the model is retrained and replaced under the same names). The
# same table is edge_app/resources.py, which finds them at run time.
SHIPPED = {
    "models/age_resnet10_int8.tflite": "models/age_resnet10_int8.tflite",
    "models/age_resnet10_int8.json": "models/age_resnet10_int8.json",
    "config.yaml": "config.yaml",
    "systemd/agecheck.service": "systemd/agecheck.service",
}


class BuildPyWithShippedFiles(build_py):
    def run(self):
        super().run()
        data = Path(self.build_lib) / "edge_app" / "data"
        for source, packaged in SHIPPED.items():
            (data / packaged).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(__file__).resolve().parent / source, data / packaged)


setup(
    name="agecheck",
    version="0.1.0",
    description="Checkout-camera age estimation (Challenge 25) with MediaPipe and an int8 TFLite ResNet",
    python_requires=">=3.11,<3.13",
    license="Apache-2.0",  # the code; the shipped model's terms are in NOTICE and docs/licences.md
    # The till's code only: `training` stays in the checkout (`python -m training...` from its
    # root, with the [train] extra installed), so no till gets a top-level `training` package.
    packages=find_packages(include=["edge_app", "edge_app.*"]),
    package_data={
        # The demo photo lives in the package itself; the rest comes from SHIPPED above.
        "edge_app": ["data/*.png"],
        # The dashboard's page templates and Chart.js (vendored from npm, MIT; see its README).
        "edge_app.manager": ["templates/*.html", "static/*"],
    },
    cmdclass={"build_py": BuildPyWithShippedFiles},
    install_requires=[
        # 0.10.21 is the last release that bundles its face models in the wheel; later ones
        # download them at run time, which a till cannot rely on.
        "mediapipe==0.10.21",
        # mediapipe 0.10.21 is built against numpy 1.x and protobuf 4.x.
        "numpy>=1.26,<2",
        "protobuf>=4.25,<5",
        # mediapipe already pulls opencv-contrib-python: never add a second cv2 wheel. 4.12+
        # requires numpy 2.
        "opencv-contrib-python>=4.8,<4.12",
        "ai-edge-litert>=1.2,<3",
        "paho-mqtt>=2,<3",
        # systemd READY/WATCHDOG notifications in pure Python (no libsystemd headers to build
        # against on the till). The protocol is stable; 0.3.2 is the current release.
        "sdnotify==0.3.2",
        "pyyaml>=6",
        "pillow>=10",
        # mediapipe.solutions imports its drawing utilities, which import matplotlib, on the
        # till. (`agecheck report` draws its own SVG charts: a manager-only install,
        # requirements/manager.in, goes without it.) 3.8 is the first release with wheels for
        # Python 3.12, the top of python_requires; <4 keeps a stable major. All of 3.8-3.x accept
        # numpy<2.
        "matplotlib>=3.8,<4",
    ],
    extras_require={
        # The manager's computer, not the till: `pip install 'agecheck[manager]'` (on top of the
        # till's libraries; requirements/manager.in is the manager's side alone). Kept out of
        # install_requires so the till runtime (requirements/till.lock, the .deb) stays under
        # 500 MB and serves no web page; `agecheck dashboard` and a postgresql:// store name
        # this extra when it is missing.
        "manager": [
            # `agecheck dashboard`: a small, well-kept web framework (Flask, with Jinja templates
            # that escape what they show) and a pure-Python production WSGI server (waitress:
            # no compiler, runs the same on a manager's Windows PC). Flask 3 / waitress 3 are
            # current.
            "flask>=3,<4",
            "waitress>=3,<4",
            # The feed and dashboard also take a postgresql:// URL (a head office's event
            # store). psycopg 3 is the maintained PostgreSQL driver; [binary] brings its own
            # libpq.
            "psycopg[binary]>=3.1,<4",
        ],
        "train": [
            # 2.19 is the last TensorFlow that accepts protobuf<5, so it shares an environment
            # with mediapipe 0.10.21.
            "tensorflow-cpu==2.19.*; platform_machine=='x86_64'",
            "onnx>=1.16",
            "onnxruntime>=1.18",
            "pandas>=2",
            # training.calibrate fits the age map as a linear programme (HiGHS, since 1.6);
            # training.decision calibrates P(age >= challenge) with isotonic regression (1.12+).
            "scipy>=1.12",
        ],
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            # The layering contract in pyproject.toml, checked by tests/test_layers.py.
            "import-linter>=2.1,<3",
            # Property-based fuzzing of the parsers that read bytes from outside (pos/scan,
            # pos/sale, events on the feed): tests/edge_app/core/test_payloads.py.
            "hypothesis>=6.100,<7",
            # Drives Debian's chromium (chromium-driver) headless in the dashboard tests.
            "selenium>=4.20,<5",
            # The type check in pyproject.toml ([tool.mypy]: strict on core, transport, till),
            # run by tests/test_types.py. A new mypy minor may find new things: the upper bound
            # keeps the major, the lower the options the config names (untyped_calls_exclude).
            "mypy>=1.20,<2",
            # PyYAML's types, for edge_app/config/files.py (paho-mqtt ships its own).
            "types-PyYAML>=6,<7",
            # The lint in pyproject.toml ([tool.ruff]), run by tests/test_lint.py. ruff is 0.x: a
            # minor release may add or change rules, so it is pinned to the minor the config and
            # code were checked with.
            "ruff>=0.17,<0.18",
        ],
    },
    entry_points={"console_scripts": ["agecheck=edge_app.cli:main"]},
)
