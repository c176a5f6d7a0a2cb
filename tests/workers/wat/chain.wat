;; Nested runs: chain(n, w) counts the nodes of a w-ary tree of depth n by running itself.
;; args: n (blob, u32 LE), w (blob, u32 LE), i (blob, any: the child index, so siblings differ).
;; n = 0: output 1. Otherwise one run_many of w children chain(n-1, w, i=k), output 1 + sum.
;; Output: a 4-byte blob (u32 LE).
(module
  ;;@prelude
  (data (i32.const 16) "n")
  (data (i32.const 20) "w")
  (data (i32.const 24) "i")

  (func (export "warpmesh_run")
    (local $job i32) (local $e i32) (local $cnt i32) (local $k i32) (local $nid i32) (local $wid i32)
    (local $n i32) (local $w i32) (local $req i32) (local $p i32) (local $res i32) (local $sum i32)
    (local $buf i32) (local $newn i32) (local $ib i32) (local $iid i32) (local $r i32) (local $v i32)
    (local.set $job (call $op (i32.const 1) (i32.const 0) (i32.const 0)))
    (local.set $cnt (i32.load offset=105 (local.get $job)))
    (local.set $e (i32.add (local.get $job) (i32.const 109)))
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $k) (local.get $cnt)))
        (if (call $entry_is (local.get $e) (i32.const 16) (i32.const 1)) (then (local.set $nid (i32.add (local.get $e) (i32.const 3)))))
        (if (call $entry_is (local.get $e) (i32.const 20) (i32.const 1)) (then (local.set $wid (i32.add (local.get $e) (i32.const 3)))))
        (local.set $e (call $entry_next (local.get $e)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $scan)))
    (local.set $n (i32.load (call $op (i32.const 2) (local.get $nid) (i32.const 32))))
    (local.set $w (i32.load (call $op (i32.const 2) (local.get $wid) (i32.const 32))))
    (local.set $sum (i32.const 1))
    (if (i32.gt_u (local.get $n) (i32.const 0))
      (then
        ;; the child's n as a blob
        (local.set $buf (call $alloc (i32.const 4)))
        (i32.store (local.get $buf) (i32.sub (local.get $n) (i32.const 1)))
        (local.set $newn (call $op (i32.const 3) (local.get $buf) (i32.const 4)))
        ;; w children: worker self, inline args {n, w, i}
        (local.set $req (call $alloc (i32.add (i32.const 4) (i32.mul (local.get $w) (i32.const 180)))))
        (i32.store (local.get $req) (local.get $w))
        (local.set $p (i32.add (local.get $req) (i32.const 4)))
        (local.set $k (i32.const 0))
        (block $built
          (loop $build
            (br_if $built (i32.ge_u (local.get $k) (local.get $w)))
            (local.set $ib (call $alloc (i32.const 4)))
            (i32.store (local.get $ib) (local.get $k))
            (local.set $iid (call $op (i32.const 3) (local.get $ib) (i32.const 4)))
            (i32.store8 (local.get $p) (i32.const 1))
            (memory.copy (i32.add (local.get $p) (i32.const 1)) (i32.add (local.get $job) (i32.const 9)) (i32.const 32))
            (i32.store8 offset=33 (local.get $p) (i32.const 1))
            (i32.store offset=34 (local.get $p) (i32.const 3))
            (local.set $p (call $put_entry (i32.add (local.get $p) (i32.const 38)) (i32.const 1) (local.get $newn) (i32.const 16) (i32.const 1)))
            (local.set $p (call $put_entry (local.get $p) (i32.const 1) (local.get $wid) (i32.const 20) (i32.const 1)))
            (local.set $p (call $put_entry (local.get $p) (i32.const 1) (local.get $iid) (i32.const 24) (i32.const 1)))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $build)))
        (local.set $res (call $op (i32.const 7) (local.get $req) (i32.sub (local.get $p) (local.get $req))))
        (local.set $r (i32.add (local.get $res) (i32.const 4)))
        (local.set $k (i32.const 0))
        (block $summed
          (loop $sum_loop
            (br_if $summed (i32.ge_u (local.get $k) (local.get $w)))
            (if (i32.ne (i32.load8_u (local.get $r)) (i32.const 0)) (then unreachable))
            (local.set $v (i32.load (call $op (i32.const 2) (i32.add (local.get $r) (i32.const 2)) (i32.const 32))))
            (local.set $sum (i32.add (local.get $sum) (local.get $v)))
            (local.set $r (i32.add (local.get $r) (i32.const 42)))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $sum_loop)))))
    (local.set $buf (call $alloc (i32.const 5)))
    (i32.store8 (local.get $buf) (i32.const 3))
    (i32.store offset=1 (local.get $buf) (local.get $sum))
    (drop (call $op (i32.const 8) (local.get $buf) (i32.const 5))))
)
