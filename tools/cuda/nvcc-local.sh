#!/bin/bash
# A CUDA compiler on a machine without a GPU, for compile checks of src/Kascade.Cuda/Kernels before device time is
# spent: Debian trixie's CUDA 12.4 toolkit (nvidia-cuda-toolkit, nvidia-cuda-dev from non-free), downloaded with a
# private apt list and unpacked — not installed — under $KASCADE_CUDA_HOME (default ~/.cache/kascade/cuda-12.4).
# Prints the nvcc to use. It sees compile errors, registers, stack frames and spills of sm_90a code; it is not the GPU
# machine's compiler (NVRTC of CUDA 13): ptxas 12.4 serialises wgmma where 13 injects warpgroup.arrive instead (C7515
# here on attention_wgmma, which 13 compiles without C7520), so judge wgmma serialisation on the GPU machine.
set -euo pipefail
home=${KASCADE_CUDA_HOME:-$HOME/.cache/kascade/cuda-12.4}
nvcc=$home/usr/lib/nvidia-cuda-toolkit/bin/nvcc
if [ ! -x "$nvcc" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cat > "$work/trixie.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  apt_options=(-o Dir::Etc::sourcelist="$work/trixie.sources" -o Dir::Etc::sourceparts=/dev/null -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache")
  echo "downloading Debian trixie's CUDA 12.4 toolkit (about 1 GB) into $home" >&2
  apt-get "${apt_options[@]}" update >&2
  (cd "$work" && apt-get "${apt_options[@]}" download nvidia-cuda-toolkit nvidia-cuda-dev >&2)
  mkdir -p "$home"
  for deb in "$work"/*.deb; do dpkg -x "$deb" "$home"; done
  # The package's profile points at /usr; this one at the unpacked tree.
  rm -f "$home/usr/lib/nvidia-cuda-toolkit/bin/nvcc.profile"
  cat > "$home/usr/lib/nvidia-cuda-toolkit/bin/nvcc.profile" <<PROFILE
NVVMIR_LIBRARY_DIR = $home/usr/lib/nvidia-cuda-toolkit/libdevice
PATH += $home/usr/lib/nvidia-cuda-toolkit/bin:$home/usr/bin:
INCLUDES += -I$home/usr/include
PROFILE
fi
echo "$nvcc"
