#!/usr/bin/env bash
# Make pycaffe importable in the virtual environment of interpreter $1.
#   GRE_CAFFE_PYTHONPATH=/path/to/caffe/python  use your own pycaffe build (e.g. with CUDA);
#   otherwise                                   build the CPU one (scripts/build-caffe.sh, cached
#                                               under ~/.cache/gre) unless it is already there.
# Either way a .pth file in the venv's site-packages points at it; nothing is copied.
set -euo pipefail
py=${1:?usage: install-caffe.sh VENV_PYTHON}
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
pth="$site/gre-caffe.pth"
if [ -n "${GRE_CAFFE_PYTHONPATH:-}" ]; then
    dir=$GRE_CAFFE_PYTHONPATH
else
    dir="$("$(dirname "$0")/build-caffe.sh" "$py" | tail -n 1)/python"
fi
if [ ! -f "$pth" ] || [ "$(cat "$pth")" != "$dir" ]; then
    echo "$dir" > "$pth"
fi
if ! "$py" -c 'import caffe' 2>/dev/null; then
    echo "install-caffe: 'import caffe' fails with $dir on the path:" >&2
    "$py" -c 'import caffe' >&2 || true
    exit 1
fi
