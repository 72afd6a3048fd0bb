"""Explicit-state model checker for the objstore shared-chunk GC protocol (incremental checkpoints).

Exhaustive BFS over all interleavings of request-level steps of a small set of actors
(writers, restorers, GC runs, a pruner) against an S3-like store:
  * strongly consistent GET / LIST (a GET/LIST whose response is lost is simply retried, which is the
    same as one atomic GET/LIST at retry time, so reads are not given a "lost" branch);
  * create-if-absent PUT, If-Match CAS PUT, unconditional DELETE;
  * lost responses on writes (option `lost`): the write takes effect but the actor does not learn it
    and follows its retry / recovery rule;
  * crashes: an actor that crashes simply never takes another step.  For a safety invariant checked in
    every reachable state this is subsumed by exhaustive interleaving (every state in which an actor
    has stopped at step p while others keep going is explored), so no explicit crash transition.

Safety invariant (checked in every reachable state):
  for every checkpoint id whose save RETURNED: if its manifest exists, every shared key it references
  exists.  (C0, the initial checkpoint, counts as returned.)

Protocol variants are selected by `Opt` (spec-literal readings vs fixes); see gc-review.md.
"""
from __future__ import annotations

import sys
import time
from collections import deque, namedtuple
from dataclasses import dataclass, replace

# ----------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class Opt:
    # writer step (b): 'exists' = only confirm base manifest exists, reuse the refs remembered from
    # restore/commit time (spec text); 'current' = use the refs of the base manifest as read in (b).
    b_mode: str = 'exists'
    # 'after' = (b) after (a) (spec); 'before' = (b) before (a) (to show the ordering matters)
    b_order: str = 'after'
    # repair: which chunks to re-upload when (e) sees generation >= baseline+2.
    #   'reused' = only chunks reused from the base (spec text "re-upload the reused chunks")
    #   'atrisk' = every ref not yet proven safe (all refs at first, then the keys of the last repair)
    repair: str = 'reused'
    # repair re-check baseline: 'last' = compare against the generation read in the check that
    # triggered the repair (needed for termination); fixed here, documented.
    # (d) retry after a lost response and 412: 'naive' = assume the existing manifest is ours;
    # 'verify' = GET it and compare writer nonce + refs.
    d_retry: str = 'naive'
    # GC step (3) lost response: 'abort' | 'gen' (re-read, proceed if generation == k0+1) |
    # 'nonce' (re-read, proceed only if the record carries this run's nonce)
    gc_lost: str = 'gen'
    # GC step (5): 'gen' = generation == k0+1 (spec); 'nonce' = generation and run nonce.
    gc_check5: str = 'gen'
    # GC step (3) carries forward the previous doomed set (restricted to keys still listed)
    carry: bool = False
    # writers reuse chunks only from a base known to have returned: own returned save, or a manifest
    # carrying "sealed": true (set by a CAS after (e) succeeded)
    seal: bool = False
    # writer HEADs every reused chunk after (a) when the base is not its own returned save
    head: bool = False
    # shared key naming: 'upload' = fresh nonce per upload; 'writer' = <content>-<writer nonce>
    keys: str = 'upload'
    # model lost responses on writes
    lost: bool = True
    # also model lost responses on chunk PUTs (object appears before the writer learns it)
    lost_put: bool = False
    # .gc.json also keeps the doomed sets of the last `hist` generations ({gen: keys}); a writer whose
    # (e) sees a generation > baseline+1 checks every intermediate doomed set instead of re-uploading
    hist: int = 0

    def name(self):
        return ' '.join(f'{k}={v}' for k, v in self.__dict__.items())


SPEC = Opt()
FIXED = Opt(b_mode='current', repair='atrisk', d_retry='verify', gc_lost='nonce', gc_check5='nonce',
            carry=False, seal=True, head=False, keys='upload', lost=True)

# ----------------------------------------------------------------------------------------------
# Global state
#   objs: frozenset of existing shared keys
#   mans: tuple sorted by id of (id, ver, refs(tuple A,B), owner, sealed)
#   gc:   None | (gen, doom frozenset, ver, nonce)
#   ret:  frozenset of checkpoint ids whose save returned
G = namedtuple('G', 'objs mans gc ret')


def man_get(mans, cid):
    for m in mans:
        if m[0] == cid:
            return m
    return None


def man_put(mans, m):
    out = [x for x in mans if x[0] != m[0]]
    out.append(m)
    return tuple(sorted(out))


def man_del(mans, cid):
    return tuple(x for x in mans if x[0] != cid)


def fs(s):
    return '{' + ','.join(sorted(s)) + '}'


def gcstr(gc):
    if gc is None:
        return 'absent'
    return f'gen={gc[0]} doom={fs(gc[1])} etag={gc[2]} run={gc[3]}'


# ----------------------------------------------------------------------------------------------
# Writer / restorer

W = namedtuple('W', 'pc saves cur base base_refs owned gs ds bobs refs reused todo baseline atrisk '
                    'ver retry seq newrefs lastg')


RESTORE_ONLY = {}  # restorer name -> set of checkpoint ids it may restore from (scenario restriction)


def new_writer(saves, base=0, base_refs=('A0.w0', 'B0.w0'), restorer=False):
    return W(pc='restore' if restorer else 'start', saves=tuple(saves), cur=None,
             base=None if restorer else base, base_refs=None if restorer else base_refs,
             owned=not restorer, gs=None, ds=None, bobs=None, refs=None, reused=frozenset(),
             todo=(), baseline=None, atrisk=frozenset(), ver=None, retry=False, seq=0,
             newrefs=None, lastg=None)


def content_of(key):
    return key.split('.')[0]


def fresh_key(o, name, L, c):
    """key for uploading bytes `c` (content id)."""
    if o.keys == 'writer':
        return f'{c}.{name}', L
    return f'{c}.{name}{L.seq}', L._replace(seq=L.seq + 1)


def w_finish(o, name, g, L, why):
    """save returned: record it and set up the next save."""
    g = g._replace(ret=g.ret | {L.cur})
    L = L._replace(base=L.cur, base_refs=L.refs, owned=True, gs=None, ds=None, bobs=None,
                   refs=None, reused=frozenset(), todo=(), baseline=None, atrisk=frozenset(),
                   ver=None, retry=False, newrefs=None, lastg=None, cur=None)
    if L.saves:
        L = L._replace(pc='start')
    else:
        L = L._replace(pc='end')
    return g, L


def w_plan(o, name, g, L):
    """local planning once (a) and (b) have both been done."""
    cid = L.saves[0]
    ex, brefs, bsealed = L.bobs
    use = None
    if L.base is not None and ex:
        use = L.base_refs if o.b_mode == 'exists' else brefs
        if o.seal and not (L.owned or bsealed):
            use = None
    # checkpoint cid rewrites slot cid % 2 and keeps (reuses) the other slot of its base
    ch = cid % 2
    keep = 1 - ch
    todo = []
    reused = frozenset()
    refs = [None, None]
    if use is not None and use[keep] not in L.ds:
        refs[keep] = use[keep]
        reused = frozenset([use[keep]])
    else:
        k, L = fresh_key(o, name, L, content_of(use[keep]) if use is not None else f"{'AB'[keep]}{cid}")
        refs[keep] = k
        todo.append(k)
    k, L = fresh_key(o, name, L, f"{'AB'[ch]}{cid}")
    refs[ch] = k
    todo.append(k)
    L = L._replace(cur=cid, saves=L.saves[1:], refs=tuple(refs), reused=reused, todo=tuple(todo))
    if o.head and reused and not L.owned:
        return L._replace(pc='head')
    return L._replace(pc='c')


def w_moves(o, name, g, L):
    pc = L.pc
    out = []
    if pc in ('end', 'fail'):
        return out
    if pc == 'restore':
        for m in g.mans:
            if RESTORE_ONLY.get(name) is not None and m[0] not in RESTORE_ONLY[name]:
                continue
            out.append((f'{name}: restore: GET manifest {m[0]} -> refs {fs(m[2])} sealed={m[4]}', g,
                        L._replace(pc='restore2', base=m[0], base_refs=m[2], owned=False)))
        return out
    if pc == 'restore2':
        ok = all(k in g.objs for k in L.base_refs)
        out.append((f'{name}: restore: GET chunks of {L.base} -> {"ok" if ok else "MISSING, restore fails"}',
                    g, L._replace(pc='start' if ok else 'end')))
        return out
    if pc == 'start':
        pc = 'a' if o.b_order == 'after' else 'b'
    if pc == 'a':
        gs = g.gc[0] if g.gc else 0
        ds = g.gc[1] if g.gc else frozenset()
        L2 = L._replace(gs=gs, ds=ds)
        lab = f'{name}: save ckpt {L.saves[0]} (a) GET .gc.json -> {gcstr(g.gc)}'
        if o.b_order == 'after':
            out.append((lab, g, L2._replace(pc='b')))
        else:
            L2 = w_plan(o, name, g, L2)
            out.append((lab + f'; plan refs={fs(L2.refs)}', g, L2))
        return out
    if pc == 'b':
        if L.base is None:
            bobs = (False, None, False)
            lab = f'{name}: (b) no base'
        else:
            m = man_get(g.mans, L.base)
            bobs = (m is not None, m[2] if m else None, m[4] if m else False)
            lab = (f'{name}: (b) GET base manifest {L.base} -> '
                   + (f'exists refs={fs(m[2])} sealed={m[4]}' if m else 'ABSENT'))
        L2 = L._replace(bobs=bobs)
        if o.b_order == 'after':
            L2 = w_plan(o, name, g, L2)
            out.append((lab + f'; plan refs={fs(L2.refs)} reused={fs(L2.reused)}', g, L2))
        else:
            out.append((lab, g, L2._replace(pc='a')))
        return out
    if pc == 'head':
        k = next(iter(L.reused))
        if k in g.objs:
            out.append((f'{name}: HEAD {k} -> exists', g, L._replace(pc='c')))
        else:
            slot = L.refs.index(k)
            k2, L2 = fresh_key(o, name, L, content_of(k))
            refs = list(L.refs)
            refs[slot] = k2
            out.append((f'{name}: HEAD {k} -> ABSENT, re-upload as {k2}', g,
                        L2._replace(pc='c', reused=frozenset(), refs=tuple(refs), todo=(k2,) + L.todo)))
        return out
    if pc in ('c', 'rc'):
        if not L.todo:
            out.append((f'{name}: (internal) uploads done', g, L._replace(pc='d' if pc == 'c' else 'rcas')))
            return out
        k = L.todo[0]
        nxt = L._replace(todo=L.todo[1:], retry=False)
        if not nxt.todo:
            nxt = nxt._replace(pc='d' if pc == 'c' else 'rcas')
        if k in g.objs:
            out.append((f'{name}: PUT {k} if-none-match -> 412 exists (treated as uploaded)', g, nxt))
        else:
            g2 = g._replace(objs=g.objs | {k})
            out.append((f'{name}: PUT {k} if-none-match -> created', g2, nxt))
            if o.lost_put:
                out.append((f'{name}: PUT {k} if-none-match -> created, RESPONSE LOST', g2,
                            L._replace(retry=True)))
        return out
    if pc == 'd':
        cid = L.cur
        m = man_get(g.mans, cid)
        ok = L._replace(pc='e', baseline=L.gs, atrisk=frozenset(L.refs), ver=1, retry=False)
        if m is None:
            g2 = g._replace(mans=man_put(g.mans, (cid, 1, L.refs, name, False)))
            out.append((f'{name}: (d) PUT manifest {cid} refs={fs(L.refs)} if-none-match -> created', g2, ok))
            if o.lost:
                out.append((f'{name}: (d) PUT manifest {cid} -> created, RESPONSE LOST (will retry)', g2,
                            L._replace(retry=True)))
        if o.lost and not L.retry:
            out.append((f'{name}: (d) PUT manifest {cid} -> TIMEOUT, request did not land (will retry)', g,
                        L._replace(retry=True)))
        if m is None:
            pass
        else:
            if L.retry and o.d_retry == 'naive':
                out.append((f'{name}: (d) retry PUT manifest {cid} -> 412; assume it is ours '
                            f'(actual owner {m[3]}, refs {fs(m[2])})', g, ok))
            elif L.retry and m[3] == name and m[2] == L.refs:
                out.append((f'{name}: (d) retry -> 412; GET shows it is ours', g, ok._replace(ver=m[1])))
            else:
                out.append((f'{name}: (d) PUT manifest {cid} -> 412 (owner {m[3]}): save fails', g,
                            L._replace(pc='fail')))
        return out
    if pc == 'e':
        gen = g.gc[0] if g.gc else 0
        doom = g.gc[1] if g.gc else frozenset()
        lab = f'{name}: (e) GET .gc.json -> {gcstr(g.gc)} (baseline {L.baseline})'
        refs = frozenset(L.refs)
        if gen == L.baseline or (gen == L.baseline + 1 and not (doom & refs)):
            g2, L2 = w_finish(o, name, g, L, 'safe')
            if o.seal:
                L2 = L._replace(pc='seal')
                g2 = g
                lab += ' -> safe, seal'
            else:
                lab += f' -> safe, RETURN ckpt {L.cur}'
            out.append((lab, g2, L2))
            return out
        hmap = dict(g.gc[4]) if g.gc else {}
        if gen == L.baseline + 1:
            bad = doom & refs
        elif o.hist and all(j in hmap for j in range(L.baseline + 1, gen + 1)):
            bad = frozenset()
            for j in range(L.baseline + 1, gen + 1):
                bad = bad | (hmap[j] & L.atrisk)
            lab += ' [history covers all generations]'
        elif o.repair == 'reused':
            bad = L.reused & refs
        else:
            bad = L.atrisk & refs
        if not bad:
            g2, L2 = w_finish(o, name, g, L, 'nothing to repair')
            if o.seal:
                L2 = L._replace(pc='seal')
                g2 = g
            out.append((lab + f' -> nothing to re-upload, RETURN ckpt {L.cur}', g2, L2))
            return out
        newrefs = list(L.refs)
        todo = []
        for slot in (0, 1):
            if L.refs[slot] in bad:
                k, L = fresh_key(o, name, L, content_of(L.refs[slot]))
                newrefs[slot] = k
                todo.append(k)
        out.append((lab + f' -> repair {fs(bad)} -> {fs(todo)}', g,
                    L._replace(pc='rc', todo=tuple(todo), newrefs=tuple(newrefs), lastg=gen)))
        return out
    if pc in ('rcas', 'rchk'):
        cid = L.cur
        m = man_get(g.mans, cid)
        newkeys = frozenset(L.newrefs) - frozenset(L.refs)
        adv = L._replace(pc='e', refs=L.newrefs, baseline=L.lastg, atrisk=newkeys,
                         reused=L.reused & frozenset(L.newrefs), newrefs=None, retry=False)
        if m is None:
            g2, L2 = w_finish(o, name, g, L, 'pruned')
            out.append((f'{name}: repair CAS manifest {cid} -> 404 (pruned), RETURN', g2, L2))
            return out
        if pc == 'rchk':
            if m[3] == name and m[2] == L.newrefs:
                out.append((f'{name}: GET manifest {cid} -> our CAS landed', g, adv._replace(ver=m[1])))
            else:
                out.append((f'{name}: GET manifest {cid} -> not ours: save fails', g, L._replace(pc='fail')))
            return out
        if m[1] == L.ver:
            g2 = g._replace(mans=man_put(g.mans, (cid, m[1] + 1, L.newrefs, m[3], m[4])))
            out.append((f'{name}: repair CAS manifest {cid} if-match v{m[1]} refs={fs(L.newrefs)} -> ok', g2,
                        adv._replace(ver=m[1] + 1)))
            if o.lost:
                out.append((f'{name}: repair CAS manifest {cid} -> ok, RESPONSE LOST', g2,
                            L._replace(pc='rchk')))
        else:
            out.append((f'{name}: repair CAS manifest {cid} if-match v{L.ver} -> 412: save fails', g,
                        L._replace(pc='fail')))
        return out
    if pc == 'seal':
        cid = L.cur
        m = man_get(g.mans, cid)
        if m is None:
            g2, L2 = w_finish(o, name, g, L, 'pruned')
            out.append((f'{name}: seal CAS manifest {cid} -> 404, RETURN ckpt {cid}', g2, L2))
        elif m[1] == L.ver:
            g1 = g._replace(mans=man_put(g.mans, (cid, m[1] + 1, m[2], m[3], True)))
            g2, L2 = w_finish(o, name, g1, L._replace(ver=m[1] + 1), 'sealed')
            out.append((f'{name}: seal CAS manifest {cid} -> ok, RETURN ckpt {cid}', g2, L2))
            # a lost response is resolved by GET (nonce/refs compare) -> same outcome; not branched
        else:
            out.append((f'{name}: seal CAS manifest {cid} -> 412: save fails', g, L._replace(pc='fail')))
        return out
    raise AssertionError(pc)


# ----------------------------------------------------------------------------------------------
# GC run

C = namedtuple('C', 'pc k0 k0ver olddoom S M R doom final myver')


def new_gc():
    return C(pc='1', k0=None, k0ver=None, olddoom=frozenset(), S=frozenset(), M=(), R=frozenset(),
             doom=frozenset(), final=(), myver=None)


def c_after_list(o, name, lab, L, phase):
    if phase == '2':
        doom = L.S - L.R
        if o.carry:
            doom = doom | (L.olddoom & L.S)
        if not doom:
            return lab + '; no candidates, done', L._replace(pc='end')
        return lab + f'; candidates {fs(doom)}', L._replace(pc='3', doom=doom)
    final = tuple(sorted(L.doom - L.R))
    return lab + f'; final {fs(final)}', L._replace(pc='5', final=final)


def c_moves(o, name, g, L):
    pc = L.pc
    out = []
    if pc in ('end', 'abort'):
        return out
    if pc == '1':
        out.append((f'{name}: (1) GET .gc.json -> {gcstr(g.gc)}', g,
                    L._replace(pc='2s', k0=g.gc[0] if g.gc else 0, k0ver=g.gc[2] if g.gc else None,
                               olddoom=g.gc[1] if g.gc else frozenset())))
        return out
    if pc == '2s':
        out.append((f'{name}: (2) LIST shared -> {fs(g.objs)}', g, L._replace(pc='2m', S=g.objs)))
        return out
    if pc in ('2m', '4m'):
        ids = tuple(m[0] for m in g.mans)
        lab = f'{name}: ({pc[0]}) LIST manifests -> {ids}'
        L2 = L._replace(pc=pc[0] + 'r', M=ids, R=frozenset())
        if not ids:
            lab, L2 = c_after_list(o, name, lab, L2, pc[0])
        out.append((lab, g, L2))
        return out
    if pc in ('2r', '4r'):
        cid = L.M[0]
        m = man_get(g.mans, cid)
        R = L.R | frozenset(m[2]) if m else L.R
        lab = f'{name}: ({pc[0]}) GET manifest {cid} -> ' + (f'refs {fs(m[2])}' if m else '404')
        L2 = L._replace(M=L.M[1:], R=R)
        if not L2.M:
            lab, L2 = c_after_list(o, name, lab, L2, pc[0])
        out.append((lab, g, L2))
        return out
    if pc == '3':
        curver = g.gc[2] if g.gc else None
        if curver == L.k0ver:
            nv = (curver or 0) + 1
            h = ()
            if o.hist:
                h = (((L.k0 + 1, L.doom),) + (g.gc[4] if g.gc else ()))[:o.hist]
            g2 = g._replace(gc=(L.k0 + 1, L.doom, nv, name, h))
            out.append((f'{name}: (3) CAS .gc.json gen={L.k0 + 1} doom={fs(L.doom)} -> ok', g2,
                        L._replace(pc='4m', myver=nv)))
            if o.lost:
                nxt = 'abort' if o.gc_lost == 'abort' else '3chk'
                out.append((f'{name}: (3) CAS .gc.json gen={L.k0 + 1} doom={fs(L.doom)} -> ok, RESPONSE LOST',
                            g2, L._replace(pc=nxt)))
        else:
            out.append((f'{name}: (3) CAS .gc.json -> 412, abort', g, L._replace(pc='abort')))
            if o.lost and o.gc_lost != 'abort':
                out.append((f'{name}: (3) CAS .gc.json -> 412, RESPONSE LOST', g, L._replace(pc='3chk')))
        return out
    if pc == '3chk':
        gen = g.gc[0] if g.gc else 0
        ok = gen == L.k0 + 1 and (o.gc_lost == 'gen' or g.gc[3] == name)
        out.append((f'{name}: (3) after lost response GET .gc.json -> {gcstr(g.gc)} -> '
                    + ('assume our CAS landed' if ok else 'abort'), g,
                    L._replace(pc='4m' if ok else 'abort')))
        return out
    if pc == '5':
        gen = g.gc[0] if g.gc else 0
        ok = o.gc_check5 == 'none' or (gen == L.k0 + 1 and (o.gc_check5 == 'gen' or g.gc[3] == name))
        nxt = ('6' if L.final else 'end') if ok else 'abort'
        out.append((f'{name}: (5) GET .gc.json -> {gcstr(g.gc)} -> ' + ('proceed' if ok else 'abort'), g,
                    L._replace(pc=nxt)))
        return out
    if pc == '6':
        if not L.final:
            out.append((f'{name}: (6) done', g, L._replace(pc='end')))
            return out
        k = L.final[0]
        out.append((f'{name}: (6) DELETE {k}', g._replace(objs=g.objs - {k}),
                    L._replace(final=L.final[1:], pc='6' if len(L.final) > 1 else 'end')))
        return out
    raise AssertionError(pc)


# ----------------------------------------------------------------------------------------------
# Pruner: deletes up to n manifests (any of `ids`) at any time.

P = namedtuple('P', 'n ids')


def p_moves(o, name, g, L):
    out = []
    if L.n <= 0:
        return out
    for m in g.mans:
        if m[0] in L.ids:
            out.append((f'{name}: DELETE manifest {m[0]} (prune)', g._replace(mans=man_del(g.mans, m[0])),
                        L._replace(n=L.n - 1, ids=L.ids - {m[0]})))
    return out


MOVES = {'W': w_moves, 'C': c_moves, 'P': p_moves}


# ----------------------------------------------------------------------------------------------
# Checker

def violation(g):
    for cid in g.ret:
        m = man_get(g.mans, cid)
        if m is not None:
            miss = [k for k in m[2] if k not in g.objs]
            if miss:
                return f'returned checkpoint {cid} (manifest v{m[1]}) references missing {fs(miss)}'
    return None


def initial(orphan=False):
    objs = {'A0.w0', 'B0.w0'}
    if orphan:
        objs.add('O.x')
    return G(objs=frozenset(objs), mans=((0, 1, ('A0.w0', 'B0.w0'), 'w0', True),), gc=None,
             ret=frozenset([0]))


def check(o, actors, orphan=False, max_states=3_000_000, max_secs=240, terminal=None, quiet=False, sym=False):
    """actors: list of (kind, name, local). Returns dict with result and trace."""
    names = [a[1] for a in actors]
    kinds = [a[0] for a in actors]
    s0 = (initial(orphan), tuple(a[2] for a in actors))
    # symmetry reduction over GC runs (identical initial state; the only place a GC's name appears in
    # the state is the run id stored in .gc.json): canonical representative = min-hash permutation
    gidx = [i for i, k in enumerate(kinds) if k == 'C'] if sym else []
    perms = []
    if len(gidx) > 1:
        import itertools
        for p in itertools.permutations(range(len(gidx))):
            if list(p) != list(range(len(gidx))):
                perms.append(p)

    def canon(st):
        if not perms:
            return st
        best, bh = st, hash(st)
        g, locs = st
        for p in perms:
            ren = {names[gidx[j]]: names[gidx[p[j]]] for j in range(len(gidx))}
            nl = list(locs)
            for j in range(len(gidx)):
                nl[gidx[p[j]]] = locs[gidx[j]]
            gc = g.gc
            if gc is not None and gc[3] in ren:
                gc = gc[:3] + (ren[gc[3]],) + gc[4:]
            v = (g._replace(gc=gc), tuple(nl))
            hv = hash(v)
            if hv < bh:
                best, bh = v, hv
        return best
    s0 = canon(s0)
    parent = {s0: None}
    q = deque([s0])
    t0 = time.time()
    n = 0
    term_bad = None
    nterm = 0
    while q:
        s = q.popleft()
        n += 1
        g, locs = s
        v = violation(g)
        if v:
            return dict(result='VIOLATION', msg=v, trace=trace(parent, s), states=len(parent),
                        secs=time.time() - t0)
        succ = 0
        for i, (k, nm) in enumerate(zip(kinds, names)):
            for lab, g2, l2 in MOVES[k](o, nm, g, locs[i]):
                succ += 1
                s2 = canon((g2, locs[:i] + (l2,) + locs[i + 1:]))
                if s2 not in parent:
                    parent[s2] = (s, lab)
                    q.append(s2)
        if succ == 0:
            nterm += 1
            if terminal and term_bad is None:
                r = terminal(g, locs)
                if r:
                    term_bad = (r, trace(parent, s))
        if len(parent) > max_states or time.time() - t0 > max_secs:
            return dict(result='BOUND', states=len(parent), secs=time.time() - t0)
    res = dict(result='OK', states=len(parent), terminals=nterm, secs=time.time() - t0)
    if term_bad:
        res.update(result='TERMINAL-FAIL', msg=term_bad[0], trace=term_bad[1])
    return res


def trace(parent, s):
    out = []
    while parent[s] is not None:
        s, lab = parent[s]
        out.append(lab)
    return out[::-1]
