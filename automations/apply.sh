#!/usr/bin/env bash
# Create the automations of notify-on-publish-failure.yaml on the Prefect server in
# PREFECT_API_URL, notifying through an existing notification block.
#
#   bash automations/apply.sh slack-webhook/ti-alerts
#
# Running it again creates second copies: list them with `prefect automation ls` and remove
# old ones with `prefect automation delete --id ID`.
set -euo pipefail
slug=${1:?usage: apply.sh BLOCK_TYPE_SLUG/BLOCK_NAME   (e.g. slack-webhook/ti-alerts)}
here=$(cd "$(dirname "$0")" && pwd)
block_json=$(prefect block inspect "$slug" -o json)
block_id=$(printf '%s' "$block_json" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
rendered=$(mktemp --suffix .yaml)
trap 'rm -f "$rendered"' EXIT
sed "s/TI_NOTIFY_BLOCK_ID/$block_id/g" "$here/notify-on-publish-failure.yaml" > "$rendered"
prefect automation create --from-file "$rendered"
