#!/usr/bin/env bash
# Install, in the venv of interpreter $1, the torch + torchvision builds this machine's NVIDIA
# driver can run (the torch engine: engine = "torch", or "auto" on a GPU; torchvision is its
# nvJPEG decode, preprocess.decode = "gpu"). A no-op when they are already there.
#   driver >= 580 (runs CUDA 13.x)   torch 2.14.1 + torchvision 0.29.1 from PyPI, CUDA 13.0
#   525 <= driver < 580 (CUDA 12.x)  torch 2.10.0 + torchvision 0.25.0 from PyPI, CUDA 12.8
#   older driver, or no NVIDIA GPU   the same 2.14.1 pair, CPU-only builds
#                                    (download.pytorch.org/whl/cpu, ~300 MB), or PyPI's CUDA
#                                    wheels (they run on the CPU too, ~5.5 GB with their CUDA
#                                    libraries) if that index cannot be reached
# GRE_TORCH_SPEC overrides the choice with pip requirements, e.g.
# "torch==2.12.0 torchvision==0.27.0".
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
    spec="torch==2.14.1 torchvision==0.29.1" want_cuda=13
elif [ -n "$major" ] && [ "$major" -ge 525 ]; then
    spec="torch==2.10.0 torchvision==0.25.0" want_cuda=12
else
    spec="torch==2.14.1 torchvision==0.29.1" want_cuda=none cpu_index=https://download.pytorch.org/whl/cpu
fi

# What is installed: "torch==VERSION torchvision==VERSION CUDA" (CUDA "None" for a CPU-only
# build), read without importing torch (as gre.model.engines.choice does).
have=$("$py" - <<'PY' 2>/dev/null || true
import importlib.util, re, pathlib
def version_file(name):
    spec = importlib.util.find_spec(name)
    return (pathlib.Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
torch, vision = version_file("torch"), version_file("torchvision")
number = lambda text: re.search(r"^__version__\s*=\s*'([^']+)'", text, re.M).group(1).split("+")[0]
cuda = re.search(r"^cuda\s*(?::[^=]*)?=\s*(?:'([^']+)'|None)", torch, re.M).group(1)
print(f"torch=={number(torch)} torchvision=={number(vision)} {cuda or 'None'}")
PY
)
have_specs=${have% *} have_cuda=${have##* }
ok=no
if [ "$have_specs" = "$spec" ]; then
    case "$want_cuda" in
        any | none) ok=yes ;;  # on the CPU either build runs
        *) [ "${have_cuda%%.*}" = "$want_cuda" ] && ok=yes ;;
    esac
fi
[ "$ok" = yes ] && exit 0

echo "install-torch: driver ${driver:-none}: installing $spec (CUDA ${want_cuda})"
# shellcheck disable=SC2086  # $spec is a list of requirements
if [ -n "$cpu_index" ] && "$py" -m pip install -q --timeout 10 --retries 0 \
        --index-url "$cpu_index" $spec 2>/dev/null; then
    exit 0
fi
# shellcheck disable=SC2086
"$py" -m pip install -q $spec
