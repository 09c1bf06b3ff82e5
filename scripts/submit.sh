#!/usr/bin/env bash
# Submit the cvo_spark pipeline (or one stage) to a Spark master with spark-submit.
# Run `scripts/submit.sh --help` for the options.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat <<'EOF'
Usage: scripts/submit.sh --as-of YYYY-MM-DD [options] [-- extra job args]

Submits jobs/run_pipeline.py (or jobs/<stage>.py with --job) to any Spark master,
shipping the cvo_spark package (a zip, --py-files), the Delta Lake package
(--packages io.delta:delta-spark_2.13:<installed delta-spark version> plus the two Delta
session confs) and the YAML config (--files).

Options:
  --master URL         Spark master: local[*], spark://host:7077, yarn, k8s://...  (default: local[*])
  --conf FILE          cvo YAML config (default: conf/local.yaml)
  --lake DIR           lake root; overrides the config's `lake`
  --as-of DATE         as-of date, ISO (required)
  --stages a,b,...     subset of stages, run in pipeline order (default: all)
  --job NAME           run jobs/NAME.py instead of jobs/run_pipeline.py (one stage: ingest,
                       features, segments, train, score, offers, measure, report)
  --report-out FILE    where the report stage writes its HTML
  --deploy-mode MODE   client (default; PySpark on a standalone master supports only client)
  --spark-conf K=V     extra Spark setting, repeatable (e.g. spark.executor.memory=4g)
  --driver-memory M    driver memory (default 2g)
  --executor-memory M  memory per executor (default: Spark's)
  --total-executor-cores N   cap on cores across the cluster (standalone)
  --python PATH        Python for driver and executors (default: the repo's .venv, else python3);
                       executors need the same packages (pyspark, delta-spark, pydantic, ...)
  --dry-run            print the spark-submit command instead of running it
  -h, --help           this text

Environment: SPARK_SUBMIT overrides which spark-submit is used (default: the one inside the
installed pyspark package, else spark-submit on PATH).

Examples:
  scripts/submit.sh --master 'local[2]' --as-of 2026-06-30 --lake /tmp/lake
  scripts/submit.sh --master spark://10.0.0.5:7077 --conf conf/cluster.yaml --as-of 2026-06-30 \
      --spark-conf spark.executor.memory=8g --total-executor-cores 32
  scripts/submit.sh --master yarn --job score --conf conf/cluster.yaml --as-of 2026-06-30
EOF
}

MASTER="local[*]"
CONF="conf/local.yaml"
LAKE=""
AS_OF=""
STAGES=""
JOB="run_pipeline"
REPORT_OUT=""
DEPLOY_MODE="client"
DRIVER_MEMORY="2g"
EXECUTOR_MEMORY=""
TOTAL_CORES=""
PY=""
DRY_RUN=0
SPARK_CONFS=()
EXTRA=()

need() { [ $# -ge 2 ] || { echo "submit.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --master) need "$@"; MASTER="$2"; shift 2 ;;
        --conf) need "$@"; CONF="$2"; shift 2 ;;
        --lake) need "$@"; LAKE="$2"; shift 2 ;;
        --as-of) need "$@"; AS_OF="$2"; shift 2 ;;
        --stages) need "$@"; STAGES="$2"; shift 2 ;;
        --job) need "$@"; JOB="$2"; shift 2 ;;
        --report-out) need "$@"; REPORT_OUT="$2"; shift 2 ;;
        --deploy-mode) need "$@"; DEPLOY_MODE="$2"; shift 2 ;;
        --spark-conf) need "$@"; SPARK_CONFS+=("$2"); shift 2 ;;
        --driver-memory) need "$@"; DRIVER_MEMORY="$2"; shift 2 ;;
        --executor-memory) need "$@"; EXECUTOR_MEMORY="$2"; shift 2 ;;
        --total-executor-cores) need "$@"; TOTAL_CORES="$2"; shift 2 ;;
        --python) need "$@"; PY="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "submit.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

[ -n "$AS_OF" ] || { echo "submit.sh: --as-of is required (see --help)" >&2; exit 2; }
[ -f "$CONF" ] || { echo "submit.sh: config file not found: $CONF" >&2; exit 2; }
JOB_FILE="$REPO/jobs/$JOB.py"
[ -f "$JOB_FILE" ] || { echo "submit.sh: no job $JOB (no $JOB_FILE)" >&2; exit 2; }
if [ "$JOB" != "run_pipeline" ] && [ -n "$STAGES" ]; then
    echo "submit.sh: --stages goes with the pipeline job, not --job $JOB" >&2; exit 2
fi

if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY="$(command -v python3)"; fi
fi

if [ -z "${SPARK_SUBMIT:-}" ]; then
    PYSPARK_DIR="$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null || true)"
    if [ -n "$PYSPARK_DIR" ] && [ -x "$PYSPARK_DIR/bin/spark-submit" ]; then
        SPARK_SUBMIT="$PYSPARK_DIR/bin/spark-submit"
        export SPARK_HOME="${SPARK_HOME:-$PYSPARK_DIR}"
    elif command -v spark-submit >/dev/null 2>&1; then
        SPARK_SUBMIT="$(command -v spark-submit)"
    else
        echo "submit.sh: no spark-submit found (install pyspark or set SPARK_SUBMIT)" >&2; exit 2
    fi
fi

DELTA_VERSION="$("$PY" -c 'from importlib.metadata import version; print(version("delta-spark"))')"
DELTA_PACKAGE="io.delta:delta-spark_2.13:${DELTA_VERSION}"

# The package ships as a zip of cvo_spark/ built fresh for this submission.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cvo_submit.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
"$PY" - "$REPO" "$WORK/cvo_spark.zip" <<'PYEOF'
import os, sys, zipfile
repo, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
    for root, dirs, files in os.walk(os.path.join(repo, "cvo_spark")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".pyc"):
                path = os.path.join(root, name)
                zf.write(path, os.path.relpath(path, repo))
PYEOF

CMD=("$SPARK_SUBMIT"
    --master "$MASTER"
    --deploy-mode "$DEPLOY_MODE"
    --name "cvo_spark:$JOB:$AS_OF"
    --driver-memory "$DRIVER_MEMORY"
    --packages "$DELTA_PACKAGE"
    --conf "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension"
    --conf "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog"
    --conf "spark.pyspark.python=$PY"
    --conf "spark.pyspark.driver.python=$PY"
    --py-files "$WORK/cvo_spark.zip"
    --files "$CONF")
[ -n "$EXECUTOR_MEMORY" ] && CMD+=(--executor-memory "$EXECUTOR_MEMORY")
[ -n "$TOTAL_CORES" ] && CMD+=(--total-executor-cores "$TOTAL_CORES")
for kv in ${SPARK_CONFS[@]+"${SPARK_CONFS[@]}"}; do CMD+=(--conf "$kv"); done

CMD+=("$JOB_FILE" --conf "$CONF" --as-of "$AS_OF")
[ -n "$LAKE" ] && CMD+=(--lake "$LAKE")
[ -n "$STAGES" ] && CMD+=(--stages "$STAGES")
[ -n "$REPORT_OUT" ] && CMD+=(--report-out "$REPORT_OUT")
CMD+=(${EXTRA[@]+"${EXTRA[@]}"})

if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "${CMD[@]}"; echo
    exit 0
fi
# The driver's Python must see the zipped package first, before any installed copy.
export PYSPARK_PYTHON="$PY"
export PYTHONPATH="$WORK/cvo_spark.zip${PYTHONPATH:+:$PYTHONPATH}"
"${CMD[@]}"
