#!/bin/bash
# CPU side by side, interleaved, one thread (issue 14): per round relion_motion_refine (motion),
# our polish with the code of checkout A then B, RELION's recombination (--combine_frames), our
# bfactors with A then B; prints "step round user sys wall peak-RSS-KB". Run from a session
# whose autogroup nice is -19 on a shared machine (BENCHMARKS.md, "Thread scaling"):
#   setsid bash -c 'echo -19 > /proc/self/autogroup; PROJECT=/tmp/p A=/work/main B=. ROUNDS=3 benchmarks/cpu_side_by_side.sh'
# PROJECT: a project of benchmarks/vs_relion.py --speed (its outputs go to MotionRefine/cpu_R,
# Polish/{main,wt}_R[_shiny]); A, B: checkouts (their rows are named main_* and wt_*); TAG: the logs'
# prefix, /tmp/TAG_*_R.log (default sbs): give each concurrent run its own, or their logs mix.
PY=${PYTHON:-/work/main/.venv/bin/python}
A=$(cd "${A:-/work/main}" && pwd); B=$(cd "${B:-.}" && pwd)
cd "${PROJECT:?PROJECT: the project folder}" || exit 1
C="--particles Refine3D/job010/run_data.star --mics MotionCorr/job002/corrected_micrographs.star --postprocess PostProcess/job012/postprocess.star --threads 1 --no-figures"
R="--i Refine3D/job010/run_data.star --f PostProcess/job012/postprocess.star --corr_mic MotionCorr/job002/corrected_micrographs.star --first_frame 1 --last_frame -1 --j 1 --s_vel 0.5 --s_div 5000 --s_acc 2"
TF="%U %S %e %M"; L=/tmp/${TAG:-sbs}
for r in $(seq ${ROUNDS:-3}); do
  rm -rf MotionRefine/cpu_$r Polish/main_$r Polish/wt_$r Polish/main_${r}_shiny Polish/wt_${r}_shiny; mkdir -p MotionRefine/cpu_$r
  echo "r$r load $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -f "relion_motion r$r $TF" relion_motion_refine $R --o MotionRefine/cpu_$r/ > ${L}_rel_$r.log 2>&1; tail -1 ${L}_rel_$r.log
  PYTHONPATH=$A /usr/bin/time -f "main_polish r$r $TF" $PY -m polishplugin.programs.polish $C --out Polish/main_$r --sigma-vel 0.5 --sigma-div 5000 --sigma-acc 2 > ${L}_mp_$r.log 2>&1; tail -1 ${L}_mp_$r.log
  PYTHONPATH=$B /usr/bin/time -f "wt_polish r$r $TF" $PY -m polishplugin.programs.polish $C --out Polish/wt_$r --sigma-vel 0.5 --sigma-div 5000 --sigma-acc 2 > ${L}_wp_$r.log 2>&1; tail -1 ${L}_wp_$r.log
  /usr/bin/time -f "relion_recomb r$r $TF" relion_motion_refine $R --o MotionRefine/cpu_$r/ --combine_frames --only_do_unfinished > ${L}_relc_$r.log 2>&1; tail -1 ${L}_relc_$r.log
  PYTHONPATH=$A /usr/bin/time -f "main_bfactors r$r $TF" $PY -m polishplugin.programs.bfactors $C --out Polish/main_${r}_shiny --polish Polish/main_$r > ${L}_mb_$r.log 2>&1; tail -1 ${L}_mb_$r.log
  PYTHONPATH=$B /usr/bin/time -f "wt_bfactors r$r $TF" $PY -m polishplugin.programs.bfactors $C --out Polish/wt_${r}_shiny --polish Polish/wt_$r > ${L}_wb_$r.log 2>&1; tail -1 ${L}_wb_$r.log
done
echo "end $(date -u) load $(cut -d' ' -f1-3 /proc/loadavg)"
