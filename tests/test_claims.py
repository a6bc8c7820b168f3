"""Trial claims on a real sqlite MLflow store: one winner per key, stale leases taken over."""

from __future__ import annotations

import threading
import time

from mlflow.tracking import MlflowClient

from lrstudy import names
from lrstudy.track import runs as track_runs
from lrstudy.track.claims import Claims, key_runs
from lrstudy.track.done_or_stale import is_stale, last_sign_of_life, reap_stale
from lrstudy.track.leases import TAG_LEASE, Lease
from lrstudy.track.store import experiment_id, open_client

STUDY = "claims"


def _tags(key: str) -> dict[str, str]:
    return {
        names.TAG_KIND: names.KIND_TRIAL,
        names.TAG_STUDY: STUDY,
        names.TAG_TRIAL_KEY: key,
        names.TAG_OUTCOME: names.OUTCOME_RUNNING,
    }


def _setup(uri: str) -> tuple[MlflowClient, str]:
    client = open_client(uri)
    return client, experiment_id(client, "claims")


def test_second_claim_on_a_held_key_backs_off(store_uri: str) -> None:
    client, exp = _setup(store_uri)
    a, b = Claims(client, exp, STUDY), Claims(client, exp, STUDY)
    run = a.claim("k1", name="t", tags=_tags("k1"), parent_id=None)
    assert run is not None
    assert a.state("k1") == "busy"
    assert b.claim("k1", name="t", tags=_tags("k1"), parent_id=None) is None
    track_runs.end_run(client, run, outcome=names.OUTCOME_OK)
    assert b.state("k1") == "done"
    assert b.claim("k1", name="t", tags=_tags("k1"), parent_id=None) is None
    assert len(key_runs(client, exp, STUDY, "k1")) == 1


def test_concurrent_claims_have_exactly_one_winner(store_uri: str) -> None:
    _, exp = _setup(store_uri)
    results: dict[int, tuple[str, object]] = {}  # thread -> ("won", run id) / ("yielded", None)
    start = threading.Barrier(6)

    def contend(i: int) -> None:
        try:
            claims = Claims(MlflowClient(store_uri), exp, STUDY)
            start.wait()
            run = claims.claim("race", name="t", tags=_tags("race"), parent_id=None)
            results[i] = ("won", run) if run is not None else ("yielded", None)
        except BaseException as e:  # noqa: BLE001 - every thread's fate is checked below
            results[i] = ("raised", repr(e))
            raise

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not [t for t in threads if t.is_alive()]
    # Every thread either won or yielded cleanly: none crashed (a crash is no "yield").
    assert sorted(results) == list(range(6))
    assert not [r for r in results.values() if r[0] == "raised"], results
    won = [run for what, run in results.values() if what == "won"]
    assert len(won) == 1 and sum(what == "yielded" for what, _ in results.values()) == 5
    client = MlflowClient(store_uri)
    alive = key_runs(client, exp, STUDY, "race")  # deleted (retracted) claims are not listed
    assert [r.info.run_id for r in alive] == won
    assert alive[0].data.tags[names.TAG_CLAIM] == "won"


def test_claim_of_another_machine_expires_with_its_lease(store_uri: str) -> None:
    client, exp = _setup(store_uri)
    beat = time.time() - 30
    # A worker on another host (its pid cannot be checked here) whose claim has a 1 s lease and
    # whose heartbeat reads 30 s ago: by its clock, which proves nothing here. What counts is that
    # we watch the heartbeat stay unchanged for the run's own lease.
    tags = {**_tags("k2"), names.TAG_HEARTBEAT: f"{beat:.3f}", names.TAG_HOST: "elsewhere"}
    tags[TAG_LEASE] = "1"
    dead = client.create_run(exp, start_time=int(beat * 1000) - 5000, run_name="t", tags=tags)
    dead = dead.info.run_id
    # First look: not watched for a lease yet, whatever the observer's own (shorter) lease.
    impatient = Claims(client, exp, STUDY, lease=Lease(ttl_s=0.1))
    assert impatient.state("k2") == "busy"
    time.sleep(1.2)
    run = impatient.claim("k2", name="t", tags=_tags("k2"), parent_id=None)
    assert run is not None and run != dead
    old = client.get_run(dead)
    assert old.info.status == "KILLED"
    assert old.data.tags[names.TAG_OUTCOME] == names.OUTCOME_KILLED
    # It ends when it last showed life, not when it was found.
    assert abs(old.info.end_time / 1000 - beat) < 1.0
    assert client.get_run(run).data.tags[TAG_LEASE] == "0.1"  # our claim carries our lease


def test_last_sign_of_life_reads_metrics_too(store_uri: str) -> None:
    client, exp = _setup(store_uri)
    run = client.create_run(exp, tags={names.TAG_HEARTBEAT: "100.0"}).info.run_id
    client.log_metric(run, "x", 1.0, timestamp=int(time.time() * 1000))
    assert last_sign_of_life(client.get_run(run)) > time.time() - 5


def test_a_reaper_never_closes_a_claim_whose_owner_came_back_before_it_finished(
    store_uri: str,
) -> None:
    # The finish race, forced step by step on a real store: the owner was cut off for longer
    # than the TTL (its lease looks expired) and comes back to finish just as a reaper acts.
    from lrstudy.execute.trial import still_running

    client, exp = _setup(store_uri)
    lease = Lease(ttl_s=1)
    # The owner's won claim (1 s lease), 30 s old: cut off for longer than its lease (on another
    # machine: its pid cannot be checked from here).
    beat = time.time() - 30
    tags = {**_tags("fin"), names.TAG_CLAIM: "won", names.TAG_HOST: "elsewhere"}
    tags[names.TAG_HEARTBEAT] = f"{beat:.3f}"
    tags[TAG_LEASE] = "1"
    run = client.create_run(exp, start_time=int(beat * 1000), run_name="t", tags=tags)
    run = run.info.run_id
    reaper = Claims(MlflowClient(store_uri), exp, STUDY, lease=lease)
    assert not is_stale(key_runs(client, exp, STUDY, "fin")[0], lease)  # first seen: watched
    time.sleep(1.2)
    looked = key_runs(client, exp, STUDY, "fin")  # 1. the reaper sees an expired lease
    assert is_stale(looked[0], lease)
    assert still_running(client, run)  # 2. the owner, back, checks its run before finishing
    reap_stale(reaper.client, looked, lease)  # 3. the reaper acts on what it saw in 1.
    again = reaper.claim("fin", name="t", tags=_tags("fin"), parent_id=None)  # 4. and claims
    track_runs.end_run(client, run, outcome=names.OUTCOME_OK)  # 5. the owner finishes
    if again is not None:  # the reaper's own trial finishes too
        track_runs.end_run(client, again, outcome=names.OUTCOME_OK)
    runs = key_runs(client, exp, STUDY, "fin")
    # One run for the key, FINISHED by its owner: never a second FINISHED run, nothing KILLED.
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run, "FINISHED")]
    assert again is None
