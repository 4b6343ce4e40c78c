# Shared by scripts/gpu-check.sh and scripts/gpu-lease.sh (sourced, not run).

# What a CUDA build of native-trainer needs at run time on a machine without the full toolkit
# layout: NVRTC (libnvrtc.so.13) from PyTorch's pip wheels on LD_LIBRARY_PATH, and CUDA headers
# under CUDA_PATH (the toolkit's /usr/local/cuda, else the wheels' copy). Python: $PY or python3.
cuda_env() {
  local nv d
  nv=$("${PY:-python3}" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0] if hasattr(nvidia, "__path__") else nvidia.__file__))' 2>/dev/null || true)
  for d in "$nv"/nvidia/cu13/lib "$nv"/nvidia/cuda_nvrtc/lib; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
  export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"
  if [ ! -f "$CUDA_PATH/include/cuda.h" ] && [ -f "$nv/nvidia/cu13/include/cuda.h" ]; then
    export CUDA_PATH="$nv/nvidia/cu13"
  fi
  return 0
}

# metrics_mean COLUMN METRICS_CSV: the mean of COLUMN over the logged intervals after the first
# (which holds kernel compiles and warm-up); rows that leave it empty (validation) are skipped.
# Prints "null" when there is none.
metrics_mean() {
  awk -F, -v c="$1" 'NR==1{for(i=1;i<=NF;i++) if($i==c) k=i; next} $k!=""{n++; if(n>1){s+=$k; m++}} END{if(m) printf "%.1f", s/m; else print "null"}' "$2"
}
