#!/usr/bin/env bash
# Wheels for bench/gpu_check.py on the device machine, which cannot download. Its image (Python 3.12, see
# /work/.library/device/KINDS.md) has torch, numpy, psutil, pyyaml and nvidia-ml-py; the portal's store and
# config dependencies travel as wheels, pinned as in requirements.txt. .device-wheels/ is git-ignored and
# travels with `carry` (about 10 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .device-wheels
.venv/bin/pip download -q -d .device-wheels --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  sqlalchemy==2.1.9 alembic==1.20.1 pydantic==2.14.3 pydantic-settings==2.16.3 itsdangerous==2.2.0
du -sh .device-wheels
