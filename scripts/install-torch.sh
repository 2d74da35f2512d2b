#!/usr/bin/env bash
# Install, in the venv of interpreter $1, the torch build this machine's NVIDIA driver can run
# (the torch engine: engine = "torch", or "auto" on a GPU). A no-op when it is already there.
#   driver >= 580 (runs CUDA 13.x)          torch 2.13.0 from PyPI, built for CUDA 13.0
#   525 <= driver < 580 (CUDA 12.x)         torch 2.10.0 from PyPI, built for CUDA 12.8
#   older driver, or no NVIDIA GPU          torch 2.13.0 CPU-only (download.pytorch.org/whl/cpu,
#                                           ~200 MB), or PyPI's CUDA wheel (runs on the CPU
#                                           too, ~3 GB with its CUDA libraries) if that index
#                                           cannot be reached
# GRE_TORCH_SPEC overrides the choice with a pip requirement, e.g. "torch==2.12.0".
set -euo pipefail
py=${1:?usage: install-torch.sh VENV_PYTHON}

driver=""
if command -v nvidia-smi >/dev/null 2>&1; then
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true)
fi
major=${driver%%.*}
cpu_index=""
if [ -n "${GRE_TORCH_SPEC:-}" ]; then
    spec=$GRE_TORCH_SPEC want_cuda=any
elif [ -n "$major" ] && [ "$major" -ge 580 ]; then
    spec="torch==2.13.0" want_cuda=13
elif [ -n "$major" ] && [ "$major" -ge 525 ]; then
    spec="torch==2.10.0" want_cuda=12
else
    spec="torch==2.13.0" want_cuda=none cpu_index=https://download.pytorch.org/whl/cpu
fi

# What is installed: "VERSION CUDA" (CUDA "None" for a CPU-only build), read without
# importing torch (as gre.model.engines.choice does).
have=$("$py" - <<'PY' 2>/dev/null || true
import importlib.util, re, pathlib
spec = importlib.util.find_spec("torch")
if spec and spec.submodule_search_locations:
    text = (pathlib.Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    version = re.search(r"^__version__\s*=\s*'([^']+)'", text, re.M).group(1)
    cuda = re.search(r"^cuda\s*(?::[^=]*)?=\s*(?:'([^']+)'|None)", text, re.M).group(1)
    print(version.split("+")[0], cuda or "None")
PY
)
have_version=${have%% *} have_cuda=${have##* }
case "$want_cuda" in
    any) ok=$([ "torch==$have_version" = "$spec" ] && echo yes || echo no) ;;
    none) ok=$([ "torch==$have_version" = "$spec" ] && echo yes || echo no) ;;  # either build runs
    *) ok=$([ "torch==$have_version" = "$spec" ] && [ "${have_cuda%%.*}" = "$want_cuda" ] && echo yes || echo no) ;;
esac
[ "$ok" = yes ] && exit 0

echo "install-torch: driver ${driver:-none}: installing $spec (CUDA ${want_cuda})"
if [ -n "$cpu_index" ] && "$py" -m pip install -q --timeout 10 --retries 0 \
        --index-url "$cpu_index" "$spec" 2>/dev/null; then
    exit 0
fi
"$py" -m pip install -q "$spec"
