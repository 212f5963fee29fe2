#!/usr/bin/env bash
# A job on Kubernetes (cluster mode: driver and executors are pods of IMAGE):
#   K8S_API=https://HOST:6443 IMAGE=apache/spark:4.0.1-scala2.13-java17-python3-ubuntu \
#   UPLOAD_PATH=s3a://BUCKET/spark-uploads deploy/spark-submit/k8s.sh produce --models ... --output ...
# IMAGE: a Spark 4.0 image with Java 17 and, for the packed environment, the same base Python as the
# machine that ran `make pack` (build the archive in that image: PYTHON=/usr/bin/python3 make pack).
# UPLOAD_PATH: where spark-submit uploads the local archive, jars and job file (spark.kubernetes.file.upload.path);
# or give ENV_ARCHIVE as a URL (s3a://, https://, local:// inside the image).
# NAMESPACE [default], SERVICE_ACCOUNT [spark]: a service account allowed to create executor pods.
# Inputs and outputs: a PersistentVolumeClaim mounted alike on driver and executors, e.g.
#   SUBMIT_ARGS="--conf spark.kubernetes.driver.volumes.persistentVolumeClaim.data.mount.path=/data
#                --conf spark.kubernetes.driver.volumes.persistentVolumeClaim.data.options.claimName=ssm-data
#                --conf spark.kubernetes.executor.volumes.persistentVolumeClaim.data.mount.path=/data
#                --conf spark.kubernetes.executor.volumes.persistentVolumeClaim.data.options.claimName=ssm-data"
# Shared settings: deploy/spark-submit/common.sh.
source "$(dirname "$0")/common.sh"
upload=()
[ -n "${UPLOAD_PATH:-}" ] && upload=(--conf "spark.kubernetes.file.upload.path=$UPLOAD_PATH")
submit --master "k8s://${K8S_API:?K8S_API=https://HOST:PORT of the Kubernetes API}" --deploy-mode cluster \
  --conf "spark.kubernetes.container.image=${IMAGE:?IMAGE=a Spark 4.0 image with Python}" \
  --conf "spark.kubernetes.namespace=${NAMESPACE:-default}" \
  --conf "spark.kubernetes.authenticate.driver.serviceAccountName=${SERVICE_ACCOUNT:-spark}" \
  "${upload[@]}"
