#!/usr/bin/env bash
# Fetch the real MRI the study uses into a cache folder (never into the repository):
#   Debian mricron-data       Colin27 T1 (ch2bet) + the AAL atlas drawn on it (templates/)
#   Debian insighttoolkit5-examples   an ITK example T1 head with its skull-strip mask (pretraining pool)
#   nilearn wheel (PyPI)      the MNI152 2009a symmetric T1 and brain mask (pretraining pool)
# Packages are downloaded and unpacked (apt-get download + dpkg -x; pip download + unzip), never installed.
# Usage: tools/fetch_brain_data.sh [CACHE]   (default ~/.cache/s2dc/brain; $PYTHON picks the pip to use)
set -euo pipefail
CACHE="${1:-$HOME/.cache/s2dc/brain}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE/debs" "$CACHE/root" "$CACHE/wheels" "$CACHE/nilearn" "$CACHE/licences"
CACHE="$(cd "$CACHE" && pwd)"

cd "$CACHE/debs"
for pkg in mricron-data insighttoolkit5-examples; do
  if ! ls "${pkg}"_*.deb >/dev/null 2>&1; then
    apt-get download "$pkg" >/dev/null 2>&1 || {
      echo "fetch_brain_data: error: apt-get download $pkg failed (run 'apt-get update' first, or check the network)" >&2
      exit 1
    }
  fi
  deb="$(ls "${pkg}"_*.deb | head -n 1)"
  dpkg -x "$deb" "$CACHE/root"
  cp "$CACHE/root/usr/share/doc/$pkg/copyright" "$CACHE/licences/$pkg.copyright"
  echo "fetched $deb"
done

cd "$CACHE/wheels"
if ! ls nilearn-*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: nilearn -d "$CACHE/wheels" || {
    echo "fetch_brain_data: error: pip download nilearn failed (no access to the package index?)" >&2
    exit 1
  }
fi
wheel="$(ls nilearn-*.whl | head -n 1)"
"$PYTHON" - "$wheel" "$CACHE/nilearn" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, out = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("nilearn/datasets/data/mni_icbm152_") and name.endswith(".nii.gz"):
            (out / Path(name).name).write_bytes(z.read(name))
        if name.endswith(".dist-info/LICENSE") or name.endswith("/licenses/LICENSE"):
            (out.parent / "licences" / "nilearn.LICENSE").write_bytes(z.read(name))
PY
echo "fetched $wheel (MNI152 files only)"
echo "cache ready: $CACHE"
