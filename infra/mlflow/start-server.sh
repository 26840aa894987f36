#!/usr/bin/env bash
# Start the MLflow tracking server that sparse-transfer sweeps log to: runs, params and metrics
# in a SQL database, artifacts (final checkpoints, sweep reports) in S3. Artifacts go through
# the server (--serve-artifacts), so only the server needs S3 access, never the sweep's nodes.
#
# Run:  MLFLOW_ARTIFACTS_DESTINATION=s3://my-bucket/mlflow bash infra/mlflow/start-server.sh
# then point sweeps at it:  export MLFLOW_TRACKING_URI=http://127.0.0.1:5000
# (infra/mlflow/README.md: Postgres, authentication, S3-compatible stores.)
#
# Settings are environment variables; defaults in brackets:
#   MLFLOW_BACKEND_STORE_URI      [sqlite:///$HOME/mlflow/mlflow.db]  one machine; a shared
#                                 server wants postgresql://USER@HOST:5432/mlflow
#   MLFLOW_ARTIFACTS_DESTINATION  [$HOME/mlflow/artifacts]  e.g. s3://my-bucket/mlflow
#   MLFLOW_HOST                   [127.0.0.1]  this machine only; 0.0.0.0 only behind
#                                 authentication and TLS
#   MLFLOW_PORT                   [5000]
#   MLFLOW_APP_NAME               [unset]  basic-auth: user names and passwords
#   MLFLOW_S3_ENDPOINT_URL        [unset]  MinIO, Ceph, R2 ...; read by MLflow's S3 client
# Arguments are passed on to `mlflow server`, e.g. --workers 2.
# S3 credentials come from the machine (instance role, ~/.aws, AWS_PROFILE), never this file.
set -euo pipefail

backend="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$HOME/mlflow/mlflow.db}"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-$HOME/mlflow/artifacts}"
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"

if [[ "$backend" == sqlite:///* ]]; then
  mkdir -p "$(dirname "${backend#sqlite:///}")"  # SQLite creates the file, not its folder
fi
app=()
if [[ -n "${MLFLOW_APP_NAME:-}" ]]; then
  app=(--app-name "$MLFLOW_APP_NAME")
fi

echo "mlflow server: http://$host:$port  backend $backend  artifacts $artifacts" >&2
exec mlflow server \
  --backend-store-uri "$backend" \
  --serve-artifacts \
  --artifacts-destination "$artifacts" \
  --host "$host" \
  --port "$port" \
  ${app[@]+"${app[@]}"} \
  "$@"
