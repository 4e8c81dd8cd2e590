#!/bin/bash
# parrotbot spot trainer: runs one attempt of one retrain job, then ends the instance.
# Rendered by infra/aws/userdata.py. It holds no secrets: the instance role grants what it needs.
#
#  0. Schedule a shutdown (a termination, by the launch template) for when the job's max run
#     time and a margin are over: the instance ends even if this script, the launcher and
#     everything else stop caring.
#  1. IMDSv2 only: every metadata read carries a fresh session token.
#  2. Wait for the launcher to tag this instance with the data volume's id (it may first have
#     to move the volume into this zone), attach it, and find it by its NVMe serial.
#  3. mkfs only when the volume is blank, mount it, fetch the job from S3 onto it.
#  4. Train under `timeout` (the job's max run time), resuming from the job's checkpoints on
#     the volume, polling the spot
#     interruption notice every few seconds and sending the trainer SIGTERM on one.
#  5. Publish a finished version to S3 (manifest last), upload the log and the status.
#  6. Always, even after an error: sync, unmount, detach, delete the fleet, terminate.
set -euo pipefail

# ---- parameters (rendered) ----
@PARAMETERS@
# ---- end of parameters ----

export AWS_DEFAULT_REGION="$REGION"
JOB_DIR="$MOUNT_DIR/jobs/$JOB_ID"
DEVICE_NAME=/dev/sdf
INSTANCE_ID=""
VOLUME_ID=""
FLEET_ID=""
ATTACHED=0
MOUNTED=0
STATUS="failed setup"

say() { printf '%s parrotbot-userdata: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

imds() {
  # One token per read: a token never expires under a long training run.
  local token
  token=$(curl -sf -X PUT "$IMDS_URL/latest/api/token" \
    -H "X-aws-ec2-metadata-token-ttl-seconds: 300") || return 1
  curl -sf -H "X-aws-ec2-metadata-token: $token" "$IMDS_URL/latest/$1"
}

wait_for_tag() {
  local value
  for _ in $(seq 1 "$TAG_WAIT_TRIES"); do
    if value=$(imds "meta-data/tags/instance/$1"); then
      printf '%s\n' "$value"
      return 0
    fi
    sleep "$POLL_SECONDS"
  done
  return 1
}

find_device() {
  # Nitro exposes an EBS volume as an NVMe disk whose serial is the volume id without its dash.
  local serial=${VOLUME_ID/-/} name
  for _ in $(seq 1 60); do
    name=$(lsblk -dno NAME,SERIAL | awk -v serial="$serial" '$2 == serial { print $1 }')
    if [ -n "$name" ]; then
      printf '%s/%s\n' "$DEV_DIR" "$name"
      return 0
    fi
    sleep 1
  done
  return 1
}

finish() {
  local code=$?
  set +e
  say "finishing: $STATUS (exit $code)"
  if [ -d "$JOB_DIR" ]; then
    printf '%s\n' "$STATUS" >"$JOB_DIR/status-$ATTEMPT"
    [ -f "$JOB_DIR/train.log" ] && aws s3 cp "$JOB_DIR/train.log" "$S3_JOB/logs/attempt-$ATTEMPT.log"
  fi
  printf '%s\n' "$STATUS" | aws s3 cp - "$S3_JOB/status/attempt-$ATTEMPT"
  cd /
  sync
  if [ "$MOUNTED" = 1 ]; then
    umount "$MOUNT_DIR" || umount -l "$MOUNT_DIR"
  fi
  if [ "$ATTACHED" = 1 ]; then
    aws ec2 detach-volume --volume-id "$VOLUME_ID" --instance-id "$INSTANCE_ID" --device "$DEVICE_NAME"
    aws ec2 wait volume-available --volume-ids "$VOLUME_ID"
  fi
  if [ -n "$FLEET_ID" ]; then
    aws ec2 delete-fleets --fleet-ids "$FLEET_ID" --terminate-instances
  fi
  if [ -n "$INSTANCE_ID" ]; then
    aws ec2 terminate-instances --instance-ids "$INSTANCE_ID"
  fi
  # The launch template makes an instance-initiated shutdown a termination.
  shutdown -h now
}
trap finish EXIT

# The backstop: whatever happens below (a hung attach, a wedged trainer, this script killed).
shutdown -h "+$BACKSTOP_MINUTES" "parrotbot: max run time exceeded" ||
  say "could not schedule the backstop shutdown in $BACKSTOP_MINUTES min"

INSTANCE_ID=$(imds meta-data/instance-id)
say "instance $INSTANCE_ID, job $JOB_ID, attempt $ATTEMPT"
VOLUME_ID=$(wait_for_tag "parrotbot:volume")
FLEET_ID=$(imds "meta-data/tags/instance/parrotbot:fleet" || true)

aws ec2 attach-volume --volume-id "$VOLUME_ID" --instance-id "$INSTANCE_ID" --device "$DEVICE_NAME"
ATTACHED=1
aws ec2 wait volume-in-use --volume-ids "$VOLUME_ID"
DEVICE=$(find_device)
if ! blkid "$DEVICE" >/dev/null 2>&1; then
  say "volume $VOLUME_ID is blank: making a file system"
  mkfs -t ext4 -L parrotbot "$DEVICE"
fi
mkdir -p "$MOUNT_DIR"
mount "$DEVICE" "$MOUNT_DIR"
MOUNTED=1

mkdir -p "$JOB_DIR/datasets" "$JOB_DIR/code"
aws s3 cp --recursive "$S3_JOB/datasets/" "$JOB_DIR/datasets/"
aws s3 cp "$S3_JOB/request.json" "$JOB_DIR/request.json"
aws s3 cp "$S3_JOB/code.tar.gz" "$JOB_DIR/code.tar.gz"
tar -xzf "$JOB_DIR/code.tar.gz" -C "$JOB_DIR/code"
for command in "${BOOTSTRAP[@]}"; do
  say "bootstrap: $command"
  bash -c "$command"
done

export PYTHONPATH="$JOB_DIR/code"
resume=()
if "$PYTHON" -m training.train --help 2>/dev/null | grep -q -- "--resume"; then
  resume=(--resume)  # continue from the job's last checkpoint on this volume, if any
fi
STATUS="failed trainer"
# SIGTERM at the max run time (the trainer checkpoints and stops), SIGKILL a minute later.
timeout --signal=TERM --kill-after=60 "$MAX_RUN_SECONDS" \
  "$PYTHON" -m training.train --request "$JOB_DIR/request.json" "${resume[@]}" \
  >>"$JOB_DIR/train.log" 2>&1 &
TRAINER=$!

NOTICE=0
while kill -0 "$TRAINER" 2>/dev/null; do
  if imds meta-data/spot/instance-action >/dev/null 2>&1; then
    say "spot interruption notice: asking the trainer to checkpoint and stop"
    NOTICE=1
    kill -TERM "$TRAINER" 2>/dev/null || true
    break
  fi
  sleep "$NOTICE_POLL_SECONDS"
done
CODE=0
wait "$TRAINER" || CODE=$?

LATEST_FILE="$JOB_DIR/checkpoints/$MODEL_KIND/LATEST"
if [ "$NOTICE" = 1 ]; then
  STATUS="interrupted"
elif [ "$CODE" = 124 ] || [ "$CODE" = 137 ]; then
  STATUS="failed timeout: ran over max_run_seconds ($MAX_RUN_SECONDS s)"
elif [ "$CODE" != 0 ]; then
  STATUS="failed $CODE"
elif [ -f "$LATEST_FILE" ]; then
  VERSION=$(cat "$LATEST_FILE")
  SOURCE="$JOB_DIR/checkpoints/$MODEL_KIND/$VERSION"
  TARGET="$S3_JOB/versions/$MODEL_KIND/$VERSION"
  aws s3 cp --recursive "$SOURCE" "$TARGET" --exclude "manifest.json"
  # The manifest goes last: readers take a version as complete only once it is there.
  aws s3 cp "$SOURCE/manifest.json" "$TARGET/manifest.json"
  STATUS="done $VERSION"
else
  STATUS="interrupted"  # stopped before publishing: the next attempt resumes
fi
say "trainer exited $CODE: $STATUS"
