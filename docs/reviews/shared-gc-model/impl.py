"""Explicit-state checker for the shared-object GC protocol AS IMPLEMENTED on branch main
after issue 12 (objstore/checkpoint/_shared.py, _incremental.py), adapted from model.py.

Every transition is one request.  Exhaustive BFS over the interleavings of:

* writers: one save call per entry of `saves` (cid, base).  A call: (a) GET .gc.json ->
  (b) GET base manifest -> LIST shared (reusable = base refs listed and not doomed) -> one
  create per new upload (fresh nonce per CALL) -> (p) create pin checkpoint_N/refs-{n} ->
  (e) GET .gc.json, refs_safe(start, end) -> [repair: GET .gc.json, LIST shared, copy every
  ref not (listed and not doomed) to a fresh key, pin again, check again] -> (d) create the
  manifest.  (d) outcomes: created; exists and ours (an earlier call of this store object
  landed: 'complete', returns the LANDED manifest); exists and another's or a tombstone:
  conflict (call fails); lost answer: the backend reads back, present -> created, gone ->
  OutcomeUnknownError: the application calls save_incremental again (a new call, same id,
  same base) -- at most `retries` times.
* GC runs: (1) GET record -> (2) LIST checkpoints/ (shared objects, manifests, pins), one
  GET per manifest / counted pin (absent -> nothing) -> plan = (listed - R) | (listed & D0)
  -> (3) CAS (lost answer, landed or not: abort) -> (4) relist + GETs -> final -> (5) GET
  record, generation == k0 + 1 (opt: and the record id ours) -> (6) one DELETE per key.
* pruner: deletes the manifest of an allowed id, then (option prune_pins) the other objects
  of its directory (pins), at most n times.
* janitor: for an allowed id whose directory has pins but no manifest: tombstone (create
  manifest.json holding a tombstone), then delete the pins.

Invariants: S1 every returned save whose manifest (the one it returned) exists references
only existing keys; S2 every existing non-tombstone manifest references only existing keys.
"""
from __future__ import annotations

import sys
import time
from collections import deque, namedtuple
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Opt:
    gc_pins: str = 'all'          # which pins the GC counts: 'uncommitted' (main before the fix) | 'all'
    prune_pins: str = 'own'       # prune deletes: 'all' pins of the directory (main before) | 'own'
    lost: bool = True             # lost answers on manifest create and GC CAS
    retries: int = 1              # application re-calls after OutcomeUnknownError
    repairs: int = 2
    carry: bool = True
    check5_id: bool = False


# state: objs frozenset; mans: tuple of (cid, refs, owner, tomb, pin_of_manifest)
#        pins: frozenset of (cid, pin_id, refs); rec: (gen, doom, ver) | None;
#        ret: frozenset of (cid, owner-tag, refs)
G = namedtuple('G', 'objs mans pins rec ret ctr')
W = namedtuple('W', 'pc calls cid base gs refs new todo tries reps pinid lost')
C = namedtuple('C', 'pc k0 ver d0 listed items refs doom final')
P = namedtuple('P', 'pc n ids cur')
J = namedtuple('J', 'pc ids cur')


def man(g, cid):
    for m in g.mans:
        if m[0] == cid:
            return m
    return None


def put_man(g, m):
    return g._replace(mans=tuple(sorted([x for x in g.mans if x[0] != m[0]] + [m])))


def fresh(g, pfx):
    return f'{pfx}{g.ctr}', g._replace(ctr=g.ctr + 1)


def safe(start, end, refs):
    if end[0] == start[0]:
        return True
    return end[0] == start[0] + 1 and not (end[1] & set(refs))


def rec_of(g):
    return (0, frozenset(), None) if g.rec is None else g.rec


def w_moves(o, name, g, L):
    out = []
    pc = L.pc
    if pc in ('end', 'fail'):
        return out
    if pc == 'start':
        cid, base = L.calls[0]
        call, g = fresh(g, 'call')
        return [(f'{name}: call save_incremental({cid}, base={base})', g,
                 L._replace(pc='a', cid=cid, base=base, calls=L.calls[1:], reps=0, lost=call))]
    if pc in ('a', 'ra'):
        r = rec_of(g)
        nxt = 'b' if pc == 'a' else 'rl'
        return [(f'{name}: ({pc}) GET record -> gen {r[0]} doom {sorted(r[1])}', g,
                 L._replace(pc=nxt, gs=r))]
    if pc == 'b':
        m = man(g, L.base) if L.base is not None else None
        brefs = m[1] if (m is not None and not m[3]) else ()
        return [(f'{name}: (b) GET base {L.base} -> {brefs}', g, L._replace(pc='bl', refs=brefs))]
    if pc == 'bl':
        # LIST shared: reuse slot 1 (content unchanged) if listed & not doomed; slot 0 is new
        base = L.refs
        reuse = base[1] if len(base) == 2 and base[1] in g.objs and base[1] not in L.gs[1] else None
        g2, n = g, ''
        k0, g2 = fresh(g2, f'{name}c{L.cid}.')
        if reuse is None:
            k1, g2 = fresh(g2, f'{name}c{L.cid}.')
            refs, todo = (k0, k1), (k0, k1)
        else:
            refs, todo = (k0, reuse), (k0,)
        return [(f'{name}: (b) LIST shared -> reuse {reuse}; refs {refs}', g2,
                 L._replace(pc='c', refs=refs, todo=todo))]
    if pc == 'rl':
        g2 = g
        refs, todo = [], []
        for k in L.refs:
            if k in g.objs and k not in L.gs[1]:
                refs.append(k)
            else:
                nk, g2 = fresh(g2, f'{name}c{L.cid}.')
                refs.append(nk)
                todo.append(nk)
        return [(f'{name}: (repair) LIST shared -> refs {refs}', g2,
                 L._replace(pc='c', refs=tuple(refs), todo=tuple(todo)))]
    if pc == 'c':
        if L.todo:
            k = L.todo[0]
            return [(f'{name}: (c) PUT {k}', g._replace(objs=g.objs | {k}), L._replace(todo=L.todo[1:]))]
        pid, g2 = fresh(g, 'pin')
        g2 = g2._replace(pins=g2.pins | {(L.cid, pid, L.refs, L.lost)})
        return [(f'{name}: (p) create pin {L.cid}/{pid} {L.refs}', g2, L._replace(pc='e', pinid=pid))]
    if pc == 'e':
        r = rec_of(g)
        if safe(L.gs, r, L.refs):
            return [(f'{name}: (e) GET record gen {r[0]} -> safe', g, L._replace(pc='d'))]
        if L.reps >= o.repairs:
            return [(f'{name}: (e) unsafe, out of repairs -> FAIL', g, L._replace(pc='fail'))]
        return [(f'{name}: (e) GET record gen {r[0]} doom {sorted(r[1])} -> repair', g,
                 L._replace(pc='ra', reps=L.reps + 1))]
    if pc == 'd':
        m = man(g, L.cid)
        if m is None:
            nm = (L.cid, L.refs, name, False, L.lost)
            ok = g._replace(ret=g.ret | {(L.cid, name, L.refs)})
            out.append((f'{name}: (d) create manifest {L.cid} {L.refs} -> RETURN', put_man(ok, nm),
                        L._replace(pc='start' if L.calls else 'end')))
            if o.lost:
                out.append((f'{name}: (d) create manifest {L.cid} lands, answer lost', put_man(g, nm),
                            L._replace(pc='rb')))
                out.append((f'{name}: (d) create manifest {L.cid} answer lost, not landed', g,
                            L._replace(pc='rb')))
            return out
        if not m[3] and m[2] == name:
            ok = g._replace(ret=g.ret | {(L.cid, name, m[1])})
            return [(f'{name}: (d) exists, ours -> complete, RETURN {m[1]}', ok,
                     L._replace(pc='start' if L.calls else 'end'))]
        return [(f'{name}: (d) exists (other/tombstone) -> conflict', g, L._replace(pc='fail'))]
    if pc == 'rb':
        m = man(g, L.cid)
        if m is not None and not m[3] and m[2] == name:
            ok = g._replace(ret=g.ret | {(L.cid, name, m[1])})
            return [(f'{name}: (d) read back: ours -> RETURN', ok,
                     L._replace(pc='start' if L.calls else 'end'))]
        if m is not None:
            return [(f'{name}: (d) read back: another object -> conflict', g, L._replace(pc='fail'))]
        if L.tries < o.retries:
            return [(f'{name}: (d) read back: gone -> OutcomeUnknown; app calls again', g,
                     L._replace(pc='start', calls=((L.cid, L.base),) + L.calls, tries=L.tries + 1))]
        return [(f'{name}: (d) read back: gone -> OutcomeUnknown', g, L._replace(pc='fail'))]
    raise AssertionError(pc)


def c_snapshot(o, g):
    """LIST checkpoints/: the shared objects and the items to GET."""
    items = []
    for m in g.mans:
        items.append(('m', m[0], None))
    committed = {m[0] for m in g.mans}
    for (cid, pid, _, _) in g.pins:
        if o.gc_pins == 'all' or cid not in committed:
            items.append(('p', cid, pid))
    return tuple(sorted(items, key=str))


def c_get(g, item):
    kind, cid, pid = item
    if kind == 'm':
        m = man(g, cid)
        return frozenset() if m is None or m[3] else frozenset(m[1])
    for (c, p, refs, _) in g.pins:
        if c == cid and p == pid:
            return frozenset(refs)
    return frozenset()


def c_moves(o, name, g, L):
    pc = L.pc
    if pc in ('end', 'abort'):
        return []
    if pc == '1':
        r = rec_of(g)
        return [(f'{name}: (1) GET record gen {r[0]}', g, L._replace(pc='2', k0=r[0], ver=r[2], d0=r[1]))]
    if pc in ('2', '4'):
        objs = g.objs if pc == '2' else L.listed
        return [(f'{name}: ({pc}) LIST -> objs {sorted(g.objs)} items {c_snapshot(o, g)}', g,
                 L._replace(pc=pc + 'g', listed=objs, items=c_snapshot(o, g), refs=frozenset()))]
    if pc in ('2g', '4g'):
        if L.items:
            it = L.items[0]
            got = c_get(g, it)
            return [(f'{name}: GET {it} -> {sorted(got)}', g,
                     L._replace(items=L.items[1:], refs=L.refs | got))]
        if pc == '2g':
            doom = (L.listed - L.refs) | ((L.listed & L.d0) if o.carry else frozenset())
            if not doom:
                return [(f'{name}: nothing to doom', g, L._replace(pc='end'))]
            return [(f'{name}: plan doom {sorted(doom)}', g, L._replace(pc='3', doom=doom))]
        final = L.doom - L.refs
        return [(f'{name}: (4) final {sorted(final)}', g, L._replace(pc='5', final=tuple(sorted(final))))]
    if pc == '3':
        cur = rec_of(g)
        if cur[2] != L.ver:
            return [(f'{name}: (3) CAS lost -> abort', g, L._replace(pc='abort'))]
        nv, g2 = fresh(g, 'v')
        g2 = g2._replace(rec=(L.k0 + 1, L.doom, nv))
        out = [(f'{name}: (3) CAS gen {L.k0 + 1}', g2, L._replace(pc='4', ver=nv))]
        if o.lost:
            out.append((f'{name}: (3) CAS lands, answer lost -> abort', g2, L._replace(pc='abort')))
        return out
    if pc == '5':
        r = rec_of(g)
        if r[0] != L.k0 + 1 or (o.check5_id and r[2] != L.ver):
            return [(f'{name}: (5) gen {r[0]} -> abort', g, L._replace(pc='abort'))]
        return [(f'{name}: (5) ok', g, L._replace(pc='6'))]
    if pc == '6':
        if not L.final:
            return [(f'{name}: done', g, L._replace(pc='end'))]
        k = L.final[0]
        return [(f'{name}: (6) DELETE {k}', g._replace(objs=g.objs - {k}), L._replace(final=L.final[1:]))]
    raise AssertionError(pc)


def p_moves(o, name, g, L):
    if L.pc == 'pins':
        cid, owner_pin = L.cur
        if o.prune_pins == 'all':
            pins = frozenset(p for p in g.pins if p[0] != cid)
        else:
            pins = frozenset(p for p in g.pins if not (p[0] == cid and p[3] == owner_pin))
        return [(f'{name}: prune {cid}: delete its pins', g._replace(pins=pins), L._replace(pc='idle', cur=None))]
    if L.n <= 0:
        return []
    out = []
    for cid in L.ids:
        m = man(g, cid)
        if m is not None and not m[3]:
            g2 = g._replace(mans=tuple(x for x in g.mans if x[0] != cid))
            out.append((f'{name}: prune {cid}: delete manifest', g2,
                        L._replace(pc='pins', n=L.n - 1, cur=(cid, m[4]))))
    return out


def j_moves(o, name, g, L):
    if L.pc == 'del':
        cid = L.cur
        return [(f'{name}: janitor: delete pins of {cid}', g._replace(pins=frozenset(p for p in g.pins if p[0] != cid)),
                 L._replace(pc='idle', cur=None))]
    out = []
    for cid in L.ids:
        if man(g, cid) is None and any(p[0] == cid for p in g.pins):
            out.append((f'{name}: janitor: tombstone {cid}', put_man(g, (cid, (), 'janitor', True, None)),
                        L._replace(pc='del', cur=cid, ids=L.ids - {cid})))
    return out


MOVES = {'W': w_moves, 'C': c_moves, 'P': p_moves, 'J': j_moves}


def violation(g):
    for m in g.mans:
        if not m[3] and not set(m[1]) <= g.objs:
            ret = any(r[0] == m[0] and r[1] == m[2] and r[2] == m[1] for r in g.ret)
            return ('S1' if ret else 'S2') + f': manifest {m[0]} by {m[2]} refs {m[1]}, missing {sorted(set(m[1]) - g.objs)}'
    return None


def check(o, actors, init, max_secs=240, max_states=5_000_000):
    t0 = time.time()
    names = tuple(a[1] for a in actors)
    kinds = tuple(a[0] for a in actors)
    s0 = (init, tuple(a[2] for a in actors))
    parent = {s0: None}
    q = deque([s0])
    while q:
        s = q.popleft()
        g, locs = s
        for i, L in enumerate(locs):
            for label, g2, L2 in MOVES[kinds[i]](o, names[i], g, L):
                s2 = (g2, locs[:i] + (L2,) + locs[i + 1:])
                if s2 in parent:
                    continue
                parent[s2] = (s, label)
                v = violation(g2)
                if v:
                    trace = []
                    x = s2
                    while parent[x] is not None:
                        x, lab = parent[x]
                        trace.append(lab)
                    return dict(result='VIOLATION', msg=v, states=len(parent), secs=time.time() - t0,
                                trace=trace[::-1])
                q.append(s2)
        if len(parent) > max_states or time.time() - t0 > max_secs:
            return dict(result='BOUNDED', states=len(parent), secs=time.time() - t0)
    return dict(result='OK', states=len(parent), secs=time.time() - t0)


INIT = G(objs=frozenset({'A0', 'B0'}), mans=((0, ('A0', 'B0'), 'init', False, None),), pins=frozenset(),
         rec=None, ret=frozenset({(0, 'init', ('A0', 'B0'))}), ctr=0)


def Wr(name, calls):
    return ('W', name, W('start', tuple(calls), None, None, None, (), (), (), 0, 0, None, False))


def Gc(name):
    return ('C', name, C('1', None, None, frozenset(), frozenset(), (), frozenset(), frozenset(), ()))


def Pr(n, ids):
    return ('P', 'p', P('idle', n, tuple(ids), None))


def Ja(ids):
    return ('J', 'j', J('idle', frozenset(ids), None))


SCEN = {
    # one save on 0, two GCs, base may be pruned
    'w1g2p': lambda: [Wr('w', [(1, 0)]), Gc('g1'), Gc('g2'), Pr(1, [0])],
    # two saves in a row (2 on 1), one GC, prune <=2 of {0,1}
    'w2g1p2': lambda: [Wr('w', [(1, 0), (2, 1)]), Gc('g1'), Pr(2, [0, 1])],
    # restorer r bases ckpt 2 on w's ckpt 1 while w may still be between (d) and returning
    'w1r1g2': lambda: [Wr('w', [(1, 0)]), Wr('r', [(2, 1)]), Gc('g1'), Gc('g2')],
    # zombie: two writers save the same id 1; one GC; prune may delete id 1 (and 0)
    'zombie_p': lambda: [Wr('w', [(1, 0)]), Wr('z', [(1, 0)]), Gc('g1'), Pr(1, [1])],
    'zombie_g2p': lambda: [Wr('w', [(1, 0)]), Wr('z', [(1, 0)]), Gc('g1'), Gc('g2'), Pr(1, [1])],
    # janitor may tombstone id 1 while w saves it
    'w1g1j': lambda: [Wr('w', [(1, 0)]), Gc('g1'), Ja([1]), Pr(1, [0])],
    # writer with lost create: retried call, prune of the landed manifest in between
    'w1g2p1': lambda: [Wr('w', [(1, 0)]), Gc('g1'), Gc('g2'), Pr(1, [0, 1])],
}


def opt(v):
    o = Opt()
    if v in ('', 'impl'):
        return o
    for kv in v.split(','):
        k, _, val = kv.partition('=')
        cur = getattr(o, k)
        val = (val == 'True') if isinstance(cur, bool) else (int(val) if isinstance(cur, int) else val)
        o = replace(o, **{k: val})
    return o


if __name__ == '__main__':
    sc = sys.argv[1]
    v = sys.argv[2] if len(sys.argv) > 2 else 'impl'
    secs = float(sys.argv[3]) if len(sys.argv) > 3 else 180
    r = check(opt(v), SCEN[sc](), INIT, max_secs=secs)
    print(f"== {sc} [{v}] -> {r['result']} states={r['states']} secs={r['secs']:.0f} {r.get('msg', '')}")
    for line in r.get('trace', []):
        print('   ', line)
