;; filecount: a fold visitor that counts files and bytes per subtree.
;;
;; post(in, children): `in` is the node (a blob for a file, a tree for a directory) and `children`
;; is a tree of the children's already-folded results under their names (empty for a file).
;; Output: a 16-byte blob, files u64 LE then bytes u64 LE. A file counts as (1, its size); a
;; directory as the sum of its children's counts.
(module
  ;;@prelude
  (data (i32.const 16) "in")
  (data (i32.const 24) "children")
  (data (i32.const 40) "filecount: args need 'in' and 'children'")   ;; 41 bytes
  (data (i32.const 96) "filecount: a child result is not 16 bytes") ;; 41 bytes

  (func (export "warpmesh_run")
    (local $job i32) (local $e i32) (local $n i32) (local $i i32)
    (local $in i32) (local $children i32) (local $files i64) (local $bytes i64)
    (local $t i32) (local $r i32) (local $out i32)
    (local.set $job (call $op (i32.const 1) (i32.const 0) (i32.const 0)))
    (local.set $n (i32.load offset=105 (local.get $job)))
    (local.set $e (i32.add (local.get $job) (i32.const 109)))
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (if (call $entry_is (local.get $e) (i32.const 16) (i32.const 2)) (then (local.set $in (local.get $e))))
        (if (call $entry_is (local.get $e) (i32.const 24) (i32.const 8)) (then (local.set $children (local.get $e))))
        (local.set $e (call $entry_next (local.get $e)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (if (i32.or (i32.eqz (local.get $in)) (i32.eqz (local.get $children)))
      (then (call $fail (i32.const 40) (i32.const 41))))
    (if (i32.eq (i32.load8_u (local.get $in)) (i32.const 1))
      (then
        ;; a file: one file of `size` bytes
        (local.set $files (i64.const 1))
        (local.set $bytes (i64.load offset=35 (local.get $in))))
      (else
        ;; a directory: sum the children's results
        (local.set $t (call $op (i32.const 5) (i32.add (local.get $children) (i32.const 3)) (i32.const 32)))
        (local.set $n (i32.load (local.get $t)))
        (local.set $e (i32.add (local.get $t) (i32.const 4)))
        (local.set $i (i32.const 0))
        (block $sum_done
          (loop $sum
            (br_if $sum_done (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $r (call $op (i32.const 2) (i32.add (local.get $e) (i32.const 3)) (i32.const 32)))
            (if (i32.ne (global.get $resp_len) (i32.const 16)) (then (call $fail (i32.const 96) (i32.const 41))))
            (local.set $files (i64.add (local.get $files) (i64.load (local.get $r))))
            (local.set $bytes (i64.add (local.get $bytes) (i64.load offset=8 (local.get $r))))
            (local.set $e (call $entry_next (local.get $e)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $sum)))))
    ;; out(inline blob): mode 3, then the 16 bytes
    (local.set $out (call $alloc (i32.const 17)))
    (i32.store8 (local.get $out) (i32.const 3))
    (i64.store offset=1 (local.get $out) (local.get $files))
    (i64.store offset=9 (local.get $out) (local.get $bytes))
    (drop (call $op (i32.const 8) (local.get $out) (i32.const 17))))
)
