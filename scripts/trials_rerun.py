"""Re-run the fault trials' cases (issue 35) against the current code and record each.

Not a test: it reads the trials' scratch environment (the report's "Setup used by the
reproductions", built under ``SCRATCH``) and writes one JSON line per case to
``SCRATCH/rerun.jsonl``: id, command, what should happen now, what happened, holds.

Usage: ``python scripts/trials_rerun.py SCRATCH [ID ...]`` with ``EP`` (the epitensor
command), ``PY`` and ``D`` (the trials' data folder) set as in the report's env.sh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

SCRATCH = sys.argv[1]
ONLY = set(sys.argv[2:])
ONE_LINE = "one_line(out)"  # stderr's last line is 'error: ...' and no traceback

# (id, kind, cwd below SCRATCH, bash command, expected now, python check on rc and out)
CASES: list[tuple[str, str, str, str, str, str]] = []


def case(cid, kind, cwd, cmd, expect, check):
    CASES.append((cid, kind, cwd, cmd, expect, check))


def one_line(out: str) -> bool:
    return "Traceback" not in out and any(x.startswith("error: ") for x in out.splitlines())


# ---- A. wrong results with exit 0 --------------------------------------------------------
case(
    "W2",
    "defect",
    "work/elsewhere",
    "$EP impute $SCRATCH/work/m_toy --celltype E003 --assay H3K4me3 --out ../imp1/E003.bw -q --overwrite"
    " && $EP impute $SCRATCH/work/m_toy --celltype E003 --assay H3K4me3 --out $SCRATCH/work/imp_elsewhere.bw -q --overwrite;"
    " echo rc=$?; $PY ../../repro/bwvalues.py ../imp1/E003.bw ../imp_elsewhere.bw",
    "the recorded store is absolute: the run from another folder gives the same output",
    "'rc=0' in out and 'max abs diff 0.0 ' in out",
)
case(
    "W3",
    "defect",
    "work",
    "rm -rf toyS.zarr m_abs resume1 && cp -r toy.zarr toyS.zarr && cp -r m_toy_S m_abs 2>/dev/null;"
    " $EP impute m_abs --celltype E003 --assay H3K4me3 --out resume1/E003.bw -q && "
    "$EP ingest ../data/toy/manifest_rot.tsv --out toyS.zarr --genome ../data/toy/toy.sizes --overwrite -q >/dev/null && "
    "$EP impute m_abs --celltype E003 --assay H3K4me3 --out resume1/E003.bw",
    "refused: the store holds other values than the model was trained on",
    f"rc == 1 and {ONE_LINE} and 'is not the data' in out",
)
case(
    "W4-impute-trees",
    "defect",
    "work",
    "$EP impute m_p2 --celltype E003 --assay H3K4me3 --trees p2shift.zarr --out p2_trees_shift.bw -q --overwrite",
    "refused: other coordinates",
    f"rc == 1 and {ONE_LINE} and 'other coordinates' in out",
)
case(
    "W4-evaluate",
    "defect",
    "work",
    "$EP evaluate m_p2 p2shift.zarr --tracks E003:H3K4me3 --out eval_shift.csv --overwrite",
    "refused: other coordinates",
    f"rc == 1 and {ONE_LINE} and 'other coordinates' in out",
)
case(
    "W4-fit-genome",
    "defect",
    "work",
    "$EP fit-genome m_p2 p2shift.zarr --out m_p2_g --epochs 1 -q",
    "refused: other coordinates",
    f"rc == 1 and {ONE_LINE} and 'other coordinates' in out",
)
case(
    "W5-names",
    "defect",
    "work",
    "rm -rf m_edit && cp -r m_toy m_edit && $PY -c \"import json; c=json.load(open('m_edit/config.json')); t=c['celltypes_']; t[0],t[1]=t[1],t[0]; json.dump(c,open('m_edit/config.json','w'))\""
    " && $EP impute m_edit --celltype E003 --assay H3K4me3 --model-only --out ed_m_edit.bw -q --overwrite",
    "refused: config.json does not match its checksum",
    f"rc == 1 and {ONE_LINE} and 'checksum' in out",
)
case(
    "W5-param",
    "defect",
    "work",
    "rm -rf m_edit2 && cp -r m_toy m_edit2 && $PY -c \"import json; c=json.load(open('m_edit2/config.json')); c['params']['average_weight']=0.0; c['module']['average_weight']=0.0; json.dump(c,open('m_edit2/config.json','w'))\""
    " && $EP impute m_edit2 --celltype E003 --assay H3K4me3 --model-only --out ed_m_edit2.bw -q --overwrite",
    "refused: config.json does not match its checksum",
    f"rc == 1 and {ONE_LINE} and 'checksum' in out",
)
case(
    "W1",
    "defect",
    "work",
    "rm -rf m_rp m_rp_old rp_*.bw; $EP train toy.zarr --out m_rp --preset tiny.json --threads 1 -q >/dev/null && cp -r m_rp m_rp_old"
    " && $PY -c \"import json;p=json.load(open('tiny.json'));p['seed']=1;p['n_epochs']=3;json.dump(p,open('seed1.json','w'))\""
    " && $EP train toy.zarr --out m_rp_new --preset seed1.json --threads 1 -q --overwrite >/dev/null"
    " && $EP impute m_rp_old --celltype E003 --assay H3K4me3 --out rp_old.bw -q && $EP impute m_rp_new --celltype E003 --assay H3K4me3 --out rp_new.bw -q"
    " && ($EP train toy.zarr --out m_rp --preset seed1.json --threads 1 --overwrite -q >/dev/null & p=$!; sleep 1.5;"
    " $EP impute m_rp --celltype E003 --assay H3K4me3 --out rp_race.bw -q; echo impute_rc=$?; wait $p; echo train_rc=$?)"
    " ; test -f rp_race.bw && $PY ../repro/cmp3.py rp_race.bw",
    "impute fails at once ('being written') or gives one model's output, never a hybrid",
    "'train_rc=0' in out and (('impute_rc=1' in out and 'being written' in out) or 'OLD' in out or '> NEW' in out or '-> NEW' in out)",
)
case(
    "W6",
    "defect",
    "work",
    "rm -rf m_mix .m_mix*; $PY -c \"import json;p=json.load(open('tiny.json'));p['n_epochs']=40;p['batch_size']=1024;json.dump(p,open('long.json','w'))\";"
    " ($EP train toy.zarr --out m_mix --preset long.json --holdout E003:H3K4me3 --threads 1 -q & p=$!; sleep 12; kill -9 $p; wait $p);"
    " ls -a | grep m_mix; $EP train elsewhere/toy.zarr --out m_mix --preset long.json --holdout E003:H3K4me3 --threads 1 --resume -q",
    "refused: the checkpoint belongs to another run (other data)",
    f"rc == 1 and {ONE_LINE} and 'another run' in out",
)
case(
    "W7",
    "defect",
    "work",
    "rm -rf pswap.zarr && cp -r p2.zarr pswap.zarr && cd pswap.zarr/signal/regions/c/0 && mv 0 t && mv 1 0 && mv t 1 && cd - >/dev/null && $EP info pswap.zarr --check",
    "info --check finds the moved chunks",
    "rc == 1 and ('moved' in out or 'not the chunk' in out)",
)
for v, words in (("nan", "finite"), ("inf", "beyond"), ("tanh", "tanh"), ("bn", "")):
    case(
        f"W{8 if v in ('nan', 'inf') else 9}-{v}",
        "defect",
        "ref",
        f"rm -rf out_{v}; $EP import-reference v_{v}/avocado-chr1 --genome hg19 --first-bin 6046322 --out out_{v} -q",
        "refused at import, one line",
        f"rc == 1 and {ONE_LINE} and {words!r} in out",
    )
case(
    "W10",
    "defect",
    "ds",
    "rm -rf o_dot; $EP downstream --features A=x_dot.csv --labels y.npy --out o_dot --model logistic --folds 3 -q",
    "refused naming the line and column",
    f"rc == 1 and {ONE_LINE} and 'line' in out",
)
case(
    "W11",
    "defect",
    "ds",
    "rm -rf o_nohdr_n o_base500; $EP downstream --features A=x_nohdr.csv --labels y.npy --n-samples 500 --out o_nohdr_n --model logistic --folds 3 -q"
    " && $EP downstream --features A=x.npy --labels y.npy --n-samples 500 --out o_base500 --model logistic --folds 3 -q && for f in o_nohdr_n o_base500; do sed -n 2p $f/summary.csv | cut -d, -f3; done",
    "the header-less CSV gives the .npy's result",
    "rc == 0 and len(out.split()) >= 2 and len(set(out.split()[-2:])) == 1",
)
for b, bed in (
    ("neg", "chrA\\t-10\\t100\\n"),
    ("beyond", "chrA\\t499000\\t600000\\n"),
    ("overlap", "chrA\\t1000\\t5000\\nchrA\\t3000\\t8000\\n"),
    ("dup", "chrA\\t1000\\t5000\\nchrA\\t1000\\t5000\\n"),
):
    case(
        f"W12-{b}",
        "defect",
        "work",
        f"mkdir -p rg && printf '{bed}' > rg/{b}.bed && rm -rf rg/{b}.zarr; $EP ingest ../data/toy/manifest.tsv --out rg/{b}.zarr --genome ../data/toy/toy.sizes --regions rg/{b}.bed --workers 1 -q",
        "refused naming the BED line",
        f"rc == 1 and {ONE_LINE} and '{b}.bed' in out",
    )
# ---- B. data loss --------------------------------------------------------------------------
case(
    "L1",
    "defect",
    "work/full",
    "rm -rf S.zarr .S.zarr*; bash ../../repro/make_full_manifests.sh && $EP ingest m5.tsv --out S.zarr --genome ../../data/toy/toy.sizes --workers 1 -q >/dev/null"
    " && ($EP ingest m20.tsv --out S.zarr --genome ../../data/toy/toy.sizes --append --workers 1 -q & p=$!; sleep 4; kill -9 $p; wait $p) ;"
    " ls -d .S.zarr.ingest-* ; rm -rf S.zarr && cp -r ../toy.zarr S.zarr && printf 'celltype\\tassay\\tpath\\nNEWC\\tH3K4me3\\t'$SCRATCH'/data/toy/E003.H3K4me3.bedGraph\\n' > mnew.tsv"
    " && $EP ingest mnew.tsv --out S.zarr --genome ../../data/toy/toy.sizes --append --workers 1 -q 2>&1 | tail -3; $EP info S.zarr | grep '^tracks'; ls -a | grep -c interrupted-append",
    "the other store keeps its 25 tracks (+ NEWC = 26); the snapshot is kept aside with a warning",
    "'26 observed' in out and out.strip().endswith('1')",
)
case(
    "L2-train",
    "defect",
    "work",
    "rm -rf selfS.zarr && cp -r toy.zarr selfS.zarr && $EP train selfS.zarr --out selfS.zarr --overwrite --epochs 1 -q; echo rc=$?; test -f selfS.zarr/zarr.json && echo STORE_KEPT",
    "refused; the store is kept",
    "'rc=1' in out and 'STORE_KEPT' in out",
)
case(
    "L2-embed",
    "defect",
    "work",
    "rm -rf selfM && cp -r m_toy selfM && $EP embed selfM --out selfM --overwrite -q; echo rc=$?; test -f selfM/config.json && echo MODEL_KEPT",
    "refused; the model is kept",
    "'rc=1' in out and 'MODEL_KEPT' in out",
)
case(
    "L2-ingest",
    "defect",
    "work",
    "rm -rf m_victim && cp -r m_toy m_victim && $EP ingest ../data/toy/manifest.tsv --out m_victim --overwrite --genome ../data/toy/toy.sizes -q; echo rc=$?; test -f m_victim/config.json && echo MODEL_KEPT",
    "refused: --out holds a model, not a store",
    "'rc=1' in out and 'MODEL_KEPT' in out",
)
# ---- C. escape -----------------------------------------------------------------------------
case(
    "E1",
    "defect",
    "sym",
    "rm -rf m_sym .m_sym.lock; echo 'IMPORTANT USER DATA' > victim.txt && ln -s $SCRATCH/sym/victim.txt .m_sym.lock; $EP train ../work/toy.zarr --out m_sym --epochs 1 -q; echo rc=$?; cat victim.txt",
    "refused: the lock is a symbolic link; victim intact",
    "'IMPORTANT USER DATA' in out and 'rc=1' in out",
)
case(
    "E2",
    "defect",
    "ref",
    "rm -rf out_names; $EP import-reference v_names/avocado-chr1 --genome hg19 --first-bin 6046322 --out out_names -q",
    "refused: invalid cell type name",
    f"rc == 1 and {ONE_LINE} and 'invalid' in out",
)
# ---- D. tracebacks -------------------------------------------------------------------------
case(
    "T1",
    "defect",
    "ref",
    "rm -rf out_strw; $EP import-reference v_strw/avocado-chr1 --genome hg19 --first-bin 6046322 --out out_strw -q",
    "one line naming the layer",
    f"rc == 1 and {ONE_LINE}",
)
case(
    "T3",
    "defect",
    "work",
    "rm -rf tune3 && mkdir tune3 && echo 'not a database' > tune3/study.db && $EP tune toy.zarr --out tune3 --trials 2 --positions 20000 --epochs 1 -q",
    "one line: not a readable study",
    f"rc == 1 and {ONE_LINE} and 'study' in out",
)
case(
    "T4",
    "defect",
    "ds",
    "rm -rf o_const; $EP downstream --features A=x.npy --labels y_const.npy --out o_const --model logistic --folds 3 -q",
    "one line",
    f"rc == 1 and {ONE_LINE}",
)
case(
    "T5",
    "defect",
    "ds",
    "rm -rf o_nonum; $EP downstream --features A=x_nonum.csv --labels y.npy --out o_nonum --model logistic --folds 3 -q",
    "one line",
    f"rc == 1 and {ONE_LINE}",
)
case(
    "T6",
    "defect",
    "work",
    "mkdir -p ann; $EP annotate m_toy --states 500 --sample 5000 --out ann/s500.bed -q",
    "one line",
    f"rc == 1 and {ONE_LINE}",
)
case(
    "T7",
    "defect",
    "work",
    "mkdir -p ann; rm -f ann/c.*; $EP annotate m_toy --states 4 --components 500 --sample 5000 --out ann/c.bed -q",
    "exit 0 (the fit holds on this model) or one line",
    f"rc == 0 or (rc == 1 and {ONE_LINE})",
)
case(
    "T8",
    "defect",
    "work",
    "mkdir -p full; rm -f full/a.bedGraph; (ulimit -f 100; $EP impute m_toy --celltype E003 --assay H3K4me3 --model-only --bedgraph --out full/a.bedGraph -q); echo rc=$?; ls full/a.bedGraph 2>&1",
    "one line, the partial file removed",
    "'rc=1' in out and 'Traceback' not in out and 'No such file' in out",
)
case(
    "T9",
    "defect",
    "work",
    'mkdir -p full; rm -rf full/m_keep; cp -r m_toy full/m_keep; before=$(md5sum full/m_keep/config.json); (ulimit -f 300; $EP train toy.zarr --out full/m_keep --preset tiny.json --threads 1 --overwrite -q); echo rc=$?; [ "$before" = "$(md5sum full/m_keep/config.json)" ] && echo OLD_MODEL_KEPT',
    "one line (File too large); the old model stays",
    "'rc=1' in out and 'Traceback' not in out and 'File too large' in out and 'OLD_MODEL_KEPT' in out",
)
case(
    "T10",
    "defect",
    "work",
    "printf 'celltype\\tassay\\nE003\\tH3K4me3\\nE017\\n' > split_bad.tsv; rm -rf bm1; $EP benchmark toy.zarr --out bm1 --split split_bad.tsv --preset none -q",
    "one line naming the row",
    f"rc == 1 and {ONE_LINE} and 'split_bad.tsv' in out",
)
case(
    "T11",
    "defect",
    "work",
    "rm -rf dirbw.bw .dirbw.bw.done.json; mkdir dirbw.bw; $EP impute m_toy --celltype E003 --assay H3K4me3 --model-only --out dirbw.bw --overwrite -q; echo rc=$?; ls -a | grep -c dirbw.bw.done",
    "refused, no stray done record",
    "'rc=1' in out and 'Traceback' not in out and out.strip().endswith('0')",
)
# ---- E. memory and hangs -------------------------------------------------------------------
case(
    "H2",
    "defect",
    "ingest",
    "$PY -c \"import gzip; f=gzip.open('bomb.bedGraph.gz','wb',9); f.write(b'chr1\\t0\\t25\\t1.0\\n'); [f.write(b'\\n'*(64<<20)) for _ in range(16)]; f.close()\" && printf 'celltype\\tassay\\tpath\\nC1\\tA1\\tbomb.bedGraph.gz\\n' > m_bomb.tsv && rm -rf bomb.zarr; (ulimit -v 4000000; $EP ingest m_bomb.tsv --out bomb.zarr --workers 1 -q)",
    "one line before expanding",
    f"rc == 1 and {ONE_LINE} and 'expands to more than' in out",
)
case(
    "H3",
    "defect",
    "work",
    "rm -f x.png; $EP explain m_toy --celltype E003 --assay H3K4me3 --region chrA:10000-12000 --steps 100000 --out x.png",
    "one line: n_steps bounded",
    f"rc == 1 and {ONE_LINE} and 'n_steps' in out",
)
case(
    "H4",
    "defect",
    "work",
    "printf 'chr11\\t64190000\\t64190001\\nchr16\\t100000\\t100001\\n' > wg.bed; rm -rf embwg2; $EP embed m_p2 --regions wg.bed --window 100000 --out embwg2 -q",
    "refused at once",
    f"rc == 1 and {ONE_LINE} and 'window' in out",
)
case(
    "H5",
    "defect",
    "ingest",
    "$PY -c \"d=bytearray(open('$D/fixtures/coolbox/bigwig_chr9_4000000_6000000_K562_H3K27ac.bigwig','rb').read()); d[52:56]=b'\\xff'*4; open('bufsize.bw','wb').write(bytes(d))\" && printf 'celltype\\tassay\\tpath\\nC1\\tA1\\tbufsize.bw\\n' > m_buf.tsv && rm -rf bufsize.zarr; (ulimit -v 4000000; $EP ingest m_buf.tsv --out bufsize.zarr --workers 1 -q); echo rc=$?; ls -a | grep -c 'bufsize.zarr.tmp'",
    "one line, no abort, no stale lock",
    "'rc=1' in out and 'decompression buffer' in out and out.strip().endswith('0')",
)
# ---- F. misleading -------------------------------------------------------------------------
case(
    "C3-ingest",
    "defect",
    "c3",
    "rm -rf s3.zarr; $EP ingest m3.tsv --out s3.zarr --genome g4.sizes --regions r.bed --workers 1 -q",
    "one line naming the 31-bit limit, not 'corrupt'",
    f"rc == 1 and {ONE_LINE} and 'cannot be read' in out and 're-download' not in out",
)
for name in ("track.dat", "track.BW", "track.bigWig.1", "track"):
    case(
        f"C4-{name}",
        "defect",
        "ingest",
        f"cp $D/fixtures/coolbox/bigwig_chr9_4000000_6000000_K562_H3K27ac.bigwig '{name}' && printf 'celltype\\tassay\\tpath\\nC1\\tA1\\t{name}\\n' > m_c4.tsv && printf 'chr9\\t4000000\\t4200000\\n' > c4.bed && rm -rf c4.zarr; $EP ingest m_c4.tsv --out c4.zarr --regions c4.bed --workers 1 -q",
        "read by content",
        "rc == 0",
    )
case(
    "C5",
    "defect",
    "work",
    "rm -rf dirA; $EP impute m_toy --celltype E003 --assay H3K4me3 --model-only --out dirA/ -q && $EP impute m_toy --celltype E017 --assay H3K4me3 --model-only --arcsinh --out dirA/ -q && $PY -c \"import json;r=json.load(open('dirA/impute.json'));print('EARLIER',len(r.get('earlier',[])))\"",
    "impute.json keeps the earlier run",
    "'EARLIER 1' in out",
)
case(
    "C6",
    "defect",
    "work",
    "stat -c '%a %n' m_toy/weights.safetensors m_toy/genome/*.safetensors m_toy/config.json",
    "0644 like config.json",
    "'600' not in out and out.count('644') >= 3",
)
case(
    "C7",
    "defect",
    "work",
    "rm -f xx.png; $EP explain m_toy --celltype E003 --assay H3K4me3 --region chrA:10000-12000 --out xx.png --tsv xx.png -q",
    "refused: --tsv is the figure's --out",
    "rc == 2 and \"figure's --out\" in ' '.join(out.replace('│',' ').split())",
)
case(
    "C8",
    "defect",
    "work",
    "rm -rf m_nohold; $EP train toy.zarr --out m_nohold --preset tiny.json --threads 1 -q",
    "prints 'no holdout', not 'holdout MSE nan'",
    "rc == 0 and 'no holdout' in out and 'nan' not in out",
)
case(
    "H1",
    "defect",
    "",
    "cd /work/wt35t && PYTHONPATH=$PWD/src $PY -m pytest tests/test_trials.py -q -s -p no:cacheprovider -k H1 2>&1 | grep -E 'bytes per line|passed|failed'",
    "parsing memory grows by at most ~40 bytes a line (was 480)",
    "' passed' in out and 'failed' not in out",
)
case(
    "C1-C2-C3-encoder",
    "defect",
    "",
    "cd /work/wt35t && PYTHONPATH=$PWD/src $PY -m pytest tests/test_trials.py -q -p no:cacheprovider -k 'C1 or C2 or C3' 2>&1 | tail -1",
    "the writer refuses NaN, sums zooms in double, refuses >4 Gb chromosomes",
    "' passed' in out and 'failed' not in out",
)
# ---- a sample of what held ---------------------------------------------------------------
for reg, what in (
    ("chrA:499990-600000", "past the end"),
    ("chrA:-5-100", "negative start"),
    ("chrA:500-400", "start >= end"),
    ("chrZ:1-100", "unknown chromosome"),
):
    case(
        f"held-impute-{what.replace(' ', '_')}",
        "held",
        "work",
        f"rm -f hr.bw; $EP impute m_toy --celltype E003 --assay H3K4me3 --model-only --region {reg} --out hr.bw -q",
        f"one line ({what})",
        "rc in (1, 2) and 'Traceback' not in out",
    )
case(
    "held-impute-edge",
    "held",
    "work",
    "rm -f he.bw; $EP impute m_toy --celltype E003 --assay H3K4me3 --model-only --region chrA:499990-500013 --region chrB:399999-400001 --out he.bw -q",
    "works at chromosome ends",
    "rc == 0",
)
case(
    "held-crc-flip",
    "held",
    "work",
    "rm -rf pflip.zarr && cp -r p2.zarr pflip.zarr && $PY -c \"p='pflip.zarr/signal/regions/c/0/1';d=bytearray(open(p,'rb').read());d[len(d)//2]^=0xFF;open(p,'wb').write(bytes(d))\" && $EP info pflip.zarr --check",
    "the flipped byte is found",
    "rc == 1 and 'corrupt' in out and 'Traceback' not in out",
)
case(
    "held-lock",
    "held",
    "work",
    "rm -rf m_lock; ($EP train toy.zarr --out m_lock --preset long.json --threads 1 -q & p=$!; sleep 6; $EP train toy.zarr --out m_lock --preset long.json -q; echo second=$?; kill $p; wait $p)",
    "the second train fails at once",
    "'second=1' in out and 'being written' in out and 'Traceback' not in out",
)
case(
    "held-bed-empty",
    "held",
    "work",
    "printf 'chrA\\t1000\\t1000\\n' > rg/empty.bed; rm -rf rg/empty.zarr; $EP ingest ../data/toy/manifest.tsv --out rg/empty.zarr --genome ../data/toy/toy.sizes --regions rg/empty.bed --workers 1 -q",
    "one line",
    f"rc == 1 and {ONE_LINE}",
)
case(
    "held-ds-plain",
    "held",
    "ds",
    "rm -rf o_plain; $EP downstream --features A=x.npy --labels y.npy --out o_plain --model logistic --folds 3 -q",
    "works",
    "rc == 0",
)
case(
    "held-ds-folds0",
    "held",
    "ds",
    "rm -rf o_f0; $EP downstream --features A=x.npy --labels y.npy --out o_f0 --model logistic --folds 0 -q",
    "one line",
    "rc in (1, 2) and 'Traceback' not in out",
)
case(
    "held-annotate-states1",
    "held",
    "work",
    "rm -f ann/s1.*; $EP annotate m_toy --states 1 --out ann/s1.bed -q",
    "one line",
    "rc in (1, 2) and 'Traceback' not in out",
)
case(
    "held-annotate-celltype",
    "held",
    "work",
    "rm -f ann/u.*; $EP annotate m_toy --states 4 --celltype E999 --out ann/u.bed -q",
    "one line",
    f"rc == 1 and {ONE_LINE}",
)
case(
    "held-explain-steps1",
    "held",
    "work",
    "rm -f s1.png; $EP explain m_toy --celltype E003 --assay H3K4me3 --region chrA:10000-12000 --steps 1 --out s1.png -q",
    "one line",
    f"rc == 1 and {ONE_LINE}",
)
case(
    "held-explain-exists",
    "held",
    "work",
    "touch ex.png; $EP explain m_toy --celltype E003 --assay H3K4me3 --region chrA:10000-12000 --out ex.png -q",
    "refused to overwrite",
    f"rc == 1 and {ONE_LINE}",
)
case(
    "held-import-shape",
    "held",
    "ref",
    "rm -rf out_shape; $EP import-reference v_shape/avocado-chr1 --genome hg19 --first-bin 6046322 --out out_shape -q",
    "refused",
    f"rc == 1 and {ONE_LINE} and 'shape' in out",
)


def run(case_: tuple) -> dict:
    cid, kind, cwd, cmd, expect, check = case_
    folder = os.path.join(SCRATCH, cwd)
    os.makedirs(folder, exist_ok=True)
    began = time.time()
    try:
        done = subprocess.run(
            ["bash", "-c", cmd],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=600,
            env=dict(os.environ, SCRATCH=SCRATCH),
        )
        rc, out = done.returncode, done.stderr + done.stdout  # stdout last: checks read its end
    except subprocess.TimeoutExpired:
        rc, out = 124, "timed out after 600 s"
    holds = bool(eval(check, {"os": os, "one_line": one_line}, {"rc": rc, "out": out}))
    last = [x for x in out.strip().splitlines() if x.strip()][-3:]
    return {
        "id": cid,
        "kind": kind,
        "command": cmd,
        "expected": expect,
        "rc": rc,
        "observed": " | ".join(last)[:600],
        "holds": holds,
        "seconds": round(time.time() - began, 1),
    }


if __name__ == "__main__":
    with open(os.path.join(SCRATCH, "rerun.jsonl"), "a") as log:
        for c in CASES:
            if ONLY and c[0] not in ONLY and c[0].split("-")[0] not in ONLY:
                continue
            record = run(c)
            print(
                f"{record['id']:28s} {'HOLDS' if record['holds'] else 'FAILS'} rc={record['rc']} "
                f"{record['seconds']}s  {record['observed'][:160]}",
                flush=True,
            )
            log.write(json.dumps(record) + "\n")
            log.flush()
