#!/bin/sh
# MONITOR_EXEC of the hotline queues (extensions.conf [record-setup]); Asterisk runs it after
# MixMonitor closed the files. $1 = recording path without extension.
# <base>-caller.wav + <base>-agent.wav  ->  <base>.wav, stereo, caller left, agent right.
set -eu
base="$1"
if [ -s "$base-caller.wav" ] && [ -s "$base-agent.wav" ]; then
    sox -M "$base-caller.wav" "$base-agent.wav" "$base.stereo.wav"
    mv -f "$base.stereo.wav" "$base.wav"
    rm -f "$base-caller.wav" "$base-agent.wav"
fi
