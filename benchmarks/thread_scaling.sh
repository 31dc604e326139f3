#!/bin/bash
# Thread scaling of polishing motion estimation (issue 14): ours (true sigmas) and
# relion_motion_refine on the same project, 1 and 2 threads, interleaved, ROUNDS rounds; prints
# wall / user / sys CPU seconds and peak RSS (KB) of the whole process (/usr/bin/time: with worker
# processes, the largest one's), and the load average before each run. TREE=1: ours through
# benchmarks/tree_memory.py instead (the memory of the whole process tree, workers included;
# its sampling of /proc takes ~0.1-0.2 of a core: use it for memory, not for timing). Run on a quiet machine from anywhere:
#   PROJECT=/tmp/polspeed/snr_0.035 TAG=mine benchmarks/thread_scaling.sh
# PROJECT: a simulated project as benchmarks/vs_relion.py --speed makes (Refine3D/job010,
# MotionCorr/job002, PostProcess/job012); TAG: suffix of the output folders (Polish/thr_TAG_t,
# MotionRefine/thr_TAG_t) and logs (/tmp/thr_TAG_*); ROUNDS (2); OURS_ONLY=1 skips RELION;
# PYTHON (the venv's python); CODE: the checkout measured (default: the one this script lies in);
# EXTRA: more options for ours (e.g. "--processes 1").
set -u
HERE=$(cd "$(dirname "$0")/.." && pwd)
PROJECT=${PROJECT:-.}; TAG=${TAG:-ts}; ROUNDS=${ROUNDS:-2}; OURS_ONLY=${OURS_ONLY:-0}
PYTHON=${PYTHON:-/work/main/.venv/bin/python}; EXTRA=${EXTRA:-}; TREE=${TREE:-0}
cd "$PROJECT" || exit 1
export PYTHONPATH=${CODE:-$HERE}
COMMON="--particles Refine3D/job010/run_data.star --mics MotionCorr/job002/corrected_micrographs.star --postprocess PostProcess/job012/postprocess.star --no-figures --sigma-vel 0.5 --sigma-div 5000 --sigma-acc 2"
for r in $(seq 1 "$ROUNDS"); do
for t in 1 2; do
  rm -rf Polish/thr_${TAG}_$t; echo "load $(cut -d' ' -f1 /proc/loadavg)"
  if [ "$TREE" = 1 ]; then RUN="$PYTHON $HERE/benchmarks/tree_memory.py --label ours_t=${t}_r=${r} --"
  else RUN="/usr/bin/time -f ours_t=${t}_r=$r:_wall_%e_user_%U_sys_%S_rss_%M"; fi
  $RUN $PYTHON -m polishplugin.programs.polish $COMMON $EXTRA --threads $t --out Polish/thr_${TAG}_$t > /tmp/thr_${TAG}_ours_$t.log 2>&1; tail -1 /tmp/thr_${TAG}_ours_$t.log | tr _ ' '
  [ "$OURS_ONLY" = 1 ] && continue
  rm -rf MotionRefine/thr_${TAG}_$t; mkdir -p MotionRefine/thr_${TAG}_$t; echo "load $(cut -d' ' -f1 /proc/loadavg)"
  /usr/bin/time -f "relion j=$t r=$r wall %e user %U sys %S rss %M" relion_motion_refine --i Refine3D/job010/run_data.star --f PostProcess/job012/postprocess.star --corr_mic MotionCorr/job002/corrected_micrographs.star --first_frame 1 --last_frame -1 --o MotionRefine/thr_${TAG}_$t/ --j $t --s_vel 0.5 --s_div 5000 --s_acc 2 > /tmp/thr_${TAG}_rel_$t.log 2>&1; tail -1 /tmp/thr_${TAG}_rel_$t.log
done; done
