#!/usr/bin/env bash
# Posts FILE (Markdown) as a comment on a Forgejo pull request, or updates
# the comment posted for the same container before (found by the first
# line of FILE, a `<!-- nixoci-diff:NAME -->` marker), so that a pull request
# has one comment per container, always the latest.
#
# usage: pr-comment.sh FILE
# env:   FORGEJO_TOKEN  a token that may comment (the job's own token); taken
#                       out of the environment at once, and sent only as a
#                       header, from a file (never on a command line)
#        API_URL        the Forgejo API, e.g. https://forge.example/api/v1
#        REPOSITORY     owner/name
#        PR             the pull request's number
# Needs curl and jq. Evaluates no Nix code.
set -euo pipefail
token=${FORGEJO_TOKEN:?FORGEJO_TOKEN is needed}
unset FORGEJO_TOKEN
file=${1:?usage: pr-comment.sh FILE}
if ! [[ "${PR:-}" =~ ^[0-9]+$ ]]; then
  echo "PR '${PR:-}' is not a pull request number" >&2
  exit 2
fi
if ! [[ "${REPOSITORY:-}" =~ ^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$ ]]; then
  echo "REPOSITORY '${REPOSITORY:-}' is not owner/name" >&2
  exit 2
fi
if ! [[ "${API_URL:-}" =~ ^https?://[A-Za-z0-9.:_/-]+$ ]]; then
  echo "API_URL '${API_URL:-}' is not an http(s) URL" >&2
  exit 2
fi
marker=$(head -n1 "$file")
if ! [[ "$marker" =~ ^\<!--\ nixoci-diff:[a-z0-9._-]+\ --\>$ ]]; then
  echo "$file does not start with a <!-- nixoci-diff:NAME --> marker" >&2
  exit 2
fi
headers=$(mktemp)
trap 'rm -f "$headers"' EXIT
chmod 600 "$headers"
printf 'Authorization: token %s\nContent-Type: application/json\n' "$token" > "$headers"
api=${API_URL%/}/repos/$REPOSITORY
# The comments so far (every page), to find ours.
existing=""
page=1
while :; do
  comments=$(curl -fsS -H @"$headers" "$api/issues/$PR/comments?page=$page&limit=50")
  existing=$(jq -r --arg m "$marker" 'map(select(.body | startswith($m))) | .[0].id // empty' <<<"$comments")
  if [ -n "$existing" ] || [ "$(jq length <<<"$comments")" -lt 50 ]; then
    break
  fi
  page=$((page + 1))
done
if [ -n "$existing" ]; then
  jq -Rs '{body: .}' < "$file" |
    curl -fsS -X PATCH -H @"$headers" --data-binary @- "$api/issues/comments/$existing" > /dev/null
  echo "updated comment $existing on $REPOSITORY#$PR"
else
  jq -Rs '{body: .}' < "$file" |
    curl -fsS -X POST -H @"$headers" --data-binary @- "$api/issues/$PR/comments" > /dev/null
  echo "commented on $REPOSITORY#$PR"
fi
