#!/usr/bin/env bash
# The build steps of the hetfield image, shared by containers/Dockerfile and containers/hetfield.def
# so that the two recipes cannot drift. Run as root, from the build, with bash and pipefail given
# on the command line (`bash -euo pipefail install.sh STEP`): OCI-format builds (podman and
# buildah by default) ignore a Dockerfile's SHELL, so nothing here relies on it.
#
#   install.sh dependencies   procps, checks of the base image, the locked Python dependencies
#   install.sh hetfield       hetfield itself (dependencies untouched), a start-up check, and the
#                             removal of the build folder (this script's own)
#
# TORCH_VERSION (required): the torch the base image must ship, the one CI tests (.ci/run).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${TORCH_VERSION:?set TORCH_VERSION to the torch version the base image must ship}"
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive

case "${1:-}" in
dependencies)
    # procps: Nextflow's task wrapper reads CPU and memory use with `ps`.
    apt-get update
    apt-get install -y --no-install-recommends procps
    rm -rf /var/lib/apt/lists/*
    # The base must be what the lock and the tests were made for; say which base to pick if not.
    python - "$TORCH_VERSION" <<'EOF'
import sys

want = sys.argv[1]
if sys.version_info[:2] != (3, 11):
    sys.exit(f"requirements.lock is for Python 3.11 but the base image has Python {sys.version.split()[0]}: choose a BASE_IMAGE with Python 3.11")
try:
    import torch
except ImportError:
    sys.exit(f"the base image has no torch: BASE_IMAGE must be a PyTorch image with torch {want}")
have = torch.__version__.split("+")[0]
if have != want:
    sys.exit(f"the base image ships torch {torch.__version__} but the tests run torch {want}: choose a BASE_IMAGE with torch {want}, or change TORCH_VERSION together with .ci/run")
print(f"base image: Python {sys.version.split()[0]}, torch {torch.__version__}")
EOF
    python -m pip install --no-cache-dir -r "$here/requirements.lock"
    ;;
hetfield)
    python -m pip install --no-cache-dir --no-deps "$here/src"
    # Start-up check. matplotlib and numba write caches on import; here they go to a throwaway
    # directory, so no root-owned cache is left where a task running as another user writes its own.
    scratch="$(mktemp -d)"
    MPLCONFIGDIR="$scratch/matplotlib" NUMBA_CACHE_DIR="$scratch/numba" XDG_CACHE_HOME="$scratch/cache" \
        hetfield --version
    MPLCONFIGDIR="$scratch/matplotlib" NUMBA_CACHE_DIR="$scratch/numba" XDG_CACHE_HOME="$scratch/cache" \
        python -c 'import torch, numpy, pandas, scipy, sklearn, umap, matplotlib, starfile, mrcfile, hetfield.cli.app'
    rm -rf "$scratch"
    # The image's cache folders (the Dockerfile's ENV; Apptainer's %post has none set: /tmp's).
    for dir in "${MPLCONFIGDIR:-/tmp/matplotlib}" "${NUMBA_CACHE_DIR:-/tmp/numba}" "${XDG_CACHE_HOME:-/tmp/.cache}"; do
        if [ -e "$dir" ]; then
            echo "install.sh: the build left $dir behind; it would be root-owned in the image" >&2
            exit 1
        fi
    done
    rm -rf "$here"
    ;;
*)
    echo "usage: bash -euo pipefail install.sh dependencies|hetfield" >&2
    exit 2
    ;;
esac
