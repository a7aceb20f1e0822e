#!/usr/bin/env bash
# Build the hetfield image from a local base and run a tiny analysis in it the way Nextflow runs a
# task: as an arbitrary uid, in a bind-mounted work directory, without network. `make container-test`
# runs it; it is slow (a vfs build takes ~15 minutes), so it is not part of `make test`.
#
#   simulate → setup → sweep plan → sweep config → train (1 epoch) → convergence → analyze
#
# Checks: the image ships the torch CI tests; no cache directory in the image; no cache or permission
# warning from any step; every output exists and belongs to the task's uid.
#
# Needs podman (and debootstrap for the base), run as root: see ../shared/CONTAINERS.md. With no
# registry, the base is a stand-in for the PyTorch image: Debian bookworm (debootstrap) with a
# Python venv at /opt/conda, the prefix of the official image, holding torch TORCH_VERSION from a
# wheel that pip downloads on this machine. Settings (environment):
#   SMOKE_WORK        working folder (default: a new folder under /var/tmp, removed on success)
#   SMOKE_BASE_IMAGE  use this base instead of building the stand-in (e.g. the real PyTorch image)
#   SMOKE_UID         uid:gid the tasks run as (default 1234:1234)
#   SMOKE_KEEP=1      keep the working folder and the images
#   PODMAN            the podman command (default: podman --storage-driver vfs --runtime runc)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

read -r -a podman <<< "${PODMAN:-podman --storage-driver vfs --runtime runc}"
limits=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
torch_version="$(sed -n 's/^ARG TORCH_VERSION=//p' containers/Dockerfile)"
hetfield_version="$(sed -n 's/^ARG HETFIELD_VERSION=//p' containers/Dockerfile)"
task_user="${SMOKE_UID:-1234:1234}"
image="localhost/hetfield-smoke:${hetfield_version}"
stand_in="localhost/hetfield-smoke-base:torch${torch_version}"
work="${SMOKE_WORK:-$(mktemp -d /var/tmp/hetfield-smoke.XXXXXX)}"
mkdir -p "$work"
chmod 755 "$work"
log="$work/smoke.log"
: > "$log"

say() { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$log" >&2; }
fail() { say "FAILED: $*"; say "logs kept in $work"; exit 1; }
timed() {  # timed NAME COMMAND...: run, log its output, record the seconds it took
    local name="$1" start=$SECONDS
    shift
    say "$name …"
    if ! "$@" >> "$log" 2>&1; then
        tail -n 40 "$log" >&2
        fail "$name (see $log)"
    fi
    times+=("$name: $((SECONDS - start)) s")
    say "$name: $((SECONDS - start)) s"
}
times=()

command -v "${podman[0]}" > /dev/null || fail "podman not found: apt-get install -y podman buildah runc debootstrap"
[ -n "$torch_version" ] || fail "no ARG TORCH_VERSION in containers/Dockerfile"

# pip inside the builds: this machine's pip settings (indexes, find-links, constraints, CA bundle),
# written to one pip.conf mounted at /etc/pip.conf, plus every local path they name, read-only.
pip_conf="$work/pip.conf"
pip_mounts=()
python3 - "$pip_conf" > "$work/pip-paths" <<'EOF'
import os, re, subprocess, sys

out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
settings = {}
for line in out.splitlines():
    m = re.match(r"^(?:[\w-]+|:env:)\.([\w-]+)='(.*)'$", line)
    if m:
        settings[m.group(1)] = m.group(2)
with open(sys.argv[1], "w") as f:
    f.write("[global]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
paths = set()
for value in settings.values():
    for item in value.split():
        path = item[len("file://"):] if item.startswith("file://") else item
        if path.startswith("/") and os.path.exists(path):
            # a local index (…/simple) links its files relative to its parent: mount the parent
            paths.add(os.path.dirname(path.rstrip("/")) if os.path.basename(path.rstrip("/")) == "simple" else path)
print("\n".join(sorted(paths)))
EOF
while read -r path; do
    [ -n "$path" ] && pip_mounts+=(-v "$path:$path:ro")
done < "$work/pip-paths"
build_net=(--network=host -v "$pip_conf:/etc/pip.conf:ro")
[ -f /etc/ssl/certs/ca-certificates.crt ] && build_net+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)

# 1. The base ------------------------------------------------------------------------------------
if [ -n "${SMOKE_BASE_IMAGE:-}" ]; then
    base="$SMOKE_BASE_IMAGE"
    say "base: $base (given)"
elif "${podman[@]}" image exists "$stand_in"; then
    base="$stand_in"
    say "base: $base (built before; remove it to rebuild)"
else
    base="$stand_in"
    command -v debootstrap > /dev/null || fail "debootstrap not found: apt-get install -y debootstrap"
    rootfs="$work/rootfs"
    timed "debootstrap bookworm" debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates bookworm "$rootfs"
    timed "import the root filesystem" bash -o pipefail -c \
        "tar -C '$rootfs' -c . | ${podman[*]} import - localhost/hetfield-smoke-debian:bookworm"
    rm -rf "$rootfs"
    mkdir -p "$work/wheels"
    timed "pip download torch==$torch_version" python3 -m pip download --quiet --dest "$work/wheels" "torch==$torch_version"
    cat > "$work/Containerfile.base" <<EOF
FROM localhost/hetfield-smoke-debian:bookworm
RUN ["/bin/bash", "-euo", "pipefail", "-c", "python3 -m venv /opt/conda && /opt/conda/bin/python -m pip install --no-cache-dir --no-index --find-links /wheels torch==$torch_version"]
ENV PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
    timed "build the stand-in base" "${podman[@]}" build "${limits[@]}" --network=none \
        -v "$work/wheels:/wheels:ro" -f "$work/Containerfile.base" -t "$stand_in" "$work"
    rm -rf "$work/wheels"
fi

# 2. The image (OCI format on purpose: nothing may depend on SHELL) ------------------------------
timed "build the image" "${podman[@]}" build "${limits[@]}" --format oci "${build_net[@]}" "${pip_mounts[@]}" \
    --build-arg "BASE_IMAGE=$base" -f containers/Dockerfile -t "$image" .

# 3. The tasks, as Nextflow runs them: -u uid:gid, the work directory mounted at the same path -----
tasks="$work/tasks"
mkdir -p "$tasks"
cat > "$tasks/chain.sh" <<'EOF'
set -euo pipefail
step() { echo "=== $*"; start=$SECONDS; "$@"; echo "--- $(( SECONDS - start )) s"; }
for d in "$MPLCONFIGDIR" "$NUMBA_CACHE_DIR" "$XDG_CACHE_HOME"; do
    [ ! -e "$d" ] || { echo "the image already holds $d ($(stat -c %U "$d")'s): tasks running as another user cannot write their caches"; exit 1; }
done
echo "uid $(id -u) gid $(id -g), HOME=${HOME:-unset}, PYTHONNOUSERSITE=${PYTHONNOUSERSITE:-unset}"
python -c 'import sys, torch; print("torch", torch.__version__); sys.exit(torch.__version__.split("+")[0] != sys.argv[1])' "$1"
export OMP_NUM_THREADS=2
step hetfield --version
step hetfield simulate sim --n-particles 24 --n-classes 2 --box 24 --n-tilts 3 --seed 0
step hetfield setup dataset --particles sim/particles.star
step hetfield sweep plan --zdim 2 --n-classes 1 --set epochs=1 --set field_hidden=32 --out plan.csv
run_id="$(sed -n '2s/,.*//p' plan.csv)"
step hetfield sweep config plan.csv --run-id "$run_id" --out run.yaml
step hetfield train run --data dataset --config run.yaml --quiet
step hetfield convergence run --out convergence --no-umap
step hetfield analyze run --epoch auto --convergence convergence --data dataset --out analysis --no-umap
python -c 'import yaml; t = yaml.safe_load(open("run/config.yaml"))["train"]; assert (t["epochs"], t["field_hidden"]) == (1, 32), t'
echo "the run trained the plan's settings"
EOF
chown -R "$task_user" "$tasks"
timed "run the tasks as uid $task_user" "${podman[@]}" run --rm "${limits[@]}" --network=none \
    --user "$task_user" -v "$tasks:$tasks" -w "$tasks" "$image" bash "$tasks/chain.sh" "$torch_version"

# 4. What the tasks left --------------------------------------------------------------------------
warnings="$(grep -n -i -E 'matplotlib created a temporary|not a writable directory|permission denied|cannot cache|numbawarning|read-only file system' "$log" || true)"
[ -z "$warnings" ] || fail "cache or permission warnings:
$warnings"
for f in sim/particles.star dataset/dataset.yaml run.yaml run/config.yaml run/weights.1.pt \
         convergence/convergence.json analysis/summary.json analysis/report.html; do
    [ -e "$tasks/$f" ] || fail "missing output $f"
done
foreign="$(find "$tasks" ! -user "${task_user%%:*}" -print | head -n 5)"
[ -z "$foreign" ] || fail "files not owned by uid ${task_user%%:*}: $foreign"

say "image size: $("${podman[@]}" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1 / 1e9}')"
say "PASSED: ${times[*]/%/;}"
if [ "${SMOKE_KEEP:-0}" != 1 ]; then
    "${podman[@]}" rmi "$image" > /dev/null 2>&1 || true
    rm -rf "$work"
fi
