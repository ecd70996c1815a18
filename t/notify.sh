#!/bin/sh
# ResilientStaplingNotifyCmd for the suite: one line per call.
echo "$@" >> "$(dirname "$0")/logs/notify/notify.log"
