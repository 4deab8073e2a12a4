#!/bin/sh
# Run by Asterisk (#exec in manager.conf, execincludes=yes in asterisk.conf) while it reads
# manager.conf: prints the AMI user's secret line from the container environment.
if [ -z "${CALLCENTER_AMI_SECRET:-}" ]; then
    echo "ami-secret.sh: CALLCENTER_AMI_SECRET is empty; the callcenter AMI user gets no secret" >&2
    # an unguessable secret instead of an empty one, so the user is unusable rather than open
    printf 'secret = %s\n' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    exit 0
fi
printf 'secret = %s\n' "$CALLCENTER_AMI_SECRET"
