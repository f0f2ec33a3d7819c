#!/usr/bin/env python3
"""A Cyclone DDS peer for Squall's DDS tests and the flight-plan example.

Runs Eclipse Cyclone DDS (the `cyclonedds` Python binding) as an independent DDS implementation.
Type: FlightPlan { string flight_id (key); uint64 version; string route; }.

  cyclone_peer.py pub --topic T --key FP1 --count 5 [--strength 10] [--interval-ms 100]
                      [--dispose] [--linger-s 1] [--transient-local] [--hang]
  cyclone_peer.py sub --topic T --seconds 5 [--expect N] [--exclusive] [--transient-local]

`pub` prints `matched` lines and `wrote <key> <version>`; `sub` prints one JSON line per sample:
{"key":..,"version":..,"route":..,"state":"alive|disposed|no_writers","valid":bool,"src_ts_ns":..}.
With --hang the publisher never exits by itself (the test kills it with SIGKILL).
"""
import argparse
import json
import sys
import time
from dataclasses import dataclass

from cyclonedds.core import Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.annotations import key
from cyclonedds.idl import types
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration


@dataclass
class FlightPlan(IdlStruct, typename="FlightPlan"):
    flight_id: str
    key("flight_id")
    version: types.uint64
    route: str


@dataclass
class BadPlan(IdlStruct, typename="FlightPlan"):
    """Same type name as FlightPlan, different layout: does not decode as a FlightPlan."""
    flight_id: str
    key("flight_id")
    version: types.uint8


@dataclass
class Pair(IdlStruct, typename="Pair"):
    """Two key fields: ("x/y", "z") and ("x", "y/z") are two instances with one store key."""
    a: str
    key("a")
    b: str
    key("b")
    v: str


def qos_of(args, writer):
    policies = [
        Policy.Reliability.Reliable(duration(seconds=1)),
        Policy.History.KeepLast(args.depth),
    ]
    if args.transient_local:
        policies.append(Policy.Durability.TransientLocal)
    if args.strength is not None:
        policies.append(Policy.Ownership.Exclusive)
        if writer:
            policies.append(Policy.OwnershipStrength(args.strength))
    elif args.exclusive:
        policies.append(Policy.Ownership.Exclusive)
    return Qos(*policies)


def say(line):
    print(line, flush=True)


def run_other(args):
    """`badpub`: BadPlan samples; `pairpub`: two Pair instances whose store keys collide."""
    dp = DomainParticipant(args.domain)
    ty = BadPlan if args.mode == "badpub" else Pair
    tp = Topic(dp, args.topic, ty)
    wr = DataWriter(dp, tp, qos=qos_of(args, True))
    deadline = time.time() + args.match_timeout_s
    while wr.get_matched_subscriptions() == [] and time.time() < deadline:
        time.sleep(0.02)
    say(f"matched {len(wr.get_matched_subscriptions())}")
    for i in range(args.count):
        if ty is BadPlan:
            wr.write(BadPlan(flight_id=args.key, version=i % 256))
        else:
            wr.write(Pair(a="x/y", b="z", v=f"first-{i}"))
            wr.write(Pair(a="x", b="y/z", v=f"second-{i}"))
        say(f"wrote {i}")
        time.sleep(args.interval_ms / 1000.0)
    time.sleep(args.linger_s)
    say("exit")


def run_pub(args):
    dp = DomainParticipant(args.domain)
    tp = Topic(dp, args.topic, FlightPlan)
    wr = DataWriter(dp, tp, qos=qos_of(args, True))
    deadline = time.time() + args.match_timeout_s
    while wr.get_matched_subscriptions() == [] and time.time() < deadline:
        time.sleep(0.02)
    say(f"matched {len(wr.get_matched_subscriptions())}")
    keys = args.key.split(",")
    for i in range(args.count):
        for k in keys:
            v = args.first_version + i
            wr.write(FlightPlan(flight_id=k, version=v, route=f"{args.route}-{v}"))
            say(f"wrote {k} {v}")
        time.sleep(args.interval_ms / 1000.0)
    if args.dispose:
        for k in keys:
            wr.dispose(FlightPlan(flight_id=k, version=0, route=""))
            say(f"disposed {k}")
    if args.hang:
        say("hanging")
        while True:
            time.sleep(1)
    time.sleep(args.linger_s)
    say("exit")


def run_sub(args):
    dp = DomainParticipant(args.domain)
    tp = Topic(dp, args.topic, FlightPlan)
    rd = DataReader(dp, tp, qos=qos_of(args, False))
    say("ready")
    end = time.time() + args.seconds
    got = 0
    keys = {}  # instance handle -> key, to name the instance of an invalid (dispose) sample
    while time.time() < end:
        for s in rd.take(N=64):
            info = s.sample_info
            state = int(info.instance_state)
            name = {1: "alive", 2: "disposed", 4: "no_writers", 16: "alive", 32: "disposed", 64: "no_writers"}.get(state, str(state))
            rec = {"state": name, "valid": bool(info.valid_data), "src_ts_ns": int(info.source_timestamp)}
            if info.valid_data:
                keys[info.instance_handle] = s.flight_id
                rec.update({"key": s.flight_id, "version": int(s.version), "route": s.route})
                got += 1
            else:
                rec.update({"key": keys.get(info.instance_handle)})
            say(json.dumps(rec, sort_keys=True))
        if args.expect is not None and got >= args.expect:
            break
        time.sleep(0.01)
    say(f"done {got}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["pub", "sub", "badpub", "pairpub"])
    p.add_argument("--domain", type=int, default=0)
    p.add_argument("--topic", default="FlightPlan")
    p.add_argument("--key", default="FP1")
    p.add_argument("--route", default="R")
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--first-version", type=int, default=1)
    p.add_argument("--interval-ms", type=int, default=50)
    p.add_argument("--strength", type=int, default=None)
    p.add_argument("--exclusive", action="store_true")
    p.add_argument("--transient-local", action="store_true")
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--dispose", action="store_true")
    p.add_argument("--hang", action="store_true")
    p.add_argument("--linger-s", type=float, default=1.0)
    p.add_argument("--match-timeout-s", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--expect", type=int, default=None)
    args = p.parse_args()
    if args.mode == "pub":
        run_pub(args)
    elif args.mode in ("badpub", "pairpub"):
        run_other(args)
    else:
        run_sub(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
