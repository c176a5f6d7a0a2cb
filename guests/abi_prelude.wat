  ;; ---- shared prelude: ABI imports, a bump allocator, error handling, entry helpers ----
  ;; (guests/build.py splices this file into each guest at the ";;@prelude" marker.)
  (import "warpmesh_abi_v1" "call" (func $call (param i32 i32 i32) (result i32)))
  (import "warpmesh_abi_v1" "read" (func $read (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))

  ;; Bump-allocate n bytes (8-aligned), growing memory as needed; trap if memory is exhausted.
  (func $alloc (param $n i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                                            (i32.const 16)))
                    (i32.const -1))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $p))

  ;; Call op on [ptr, ptr+len). On success return the address of a copy of the response (its length
  ;; is left in $resp_len). On error, log the host's message and trap.
  (global $resp_len (mut i32) (i32.const 0))
  (func $op (param $op i32) (param $ptr i32) (param $len i32) (result i32)
    (local $n i32) (local $buf i32)
    (local.set $n (call $call (local.get $op) (local.get $ptr) (local.get $len)))
    (if (i32.lt_s (local.get $n) (i32.const 0))
      (then
        (local.set $n (i32.sub (i32.const 0) (local.get $n)))
        (local.set $buf (call $alloc (local.get $n)))
        (drop (call $read (local.get $buf) (local.get $n)))
        (drop (call $call (i32.const 9) (local.get $buf) (local.get $n)))  ;; log it
        unreachable))
    (global.set $resp_len (local.get $n))
    (local.set $buf (call $alloc (local.get $n)))
    (if (i32.gt_s (local.get $n) (i32.const 0))
      (then (drop (call $read (local.get $buf) (local.get $n)))))
    (local.get $buf))

  ;; Fail the job with a message: log it, then trap.
  (func $fail (param $msg i32) (param $len i32)
    (drop (call $call (i32.const 9) (local.get $msg) (local.get $len)))
    unreachable)

  ;; Bytes equal?
  (func $eq (param $a i32) (param $alen i32) (param $b i32) (param $blen i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $alen) (local.get $blen)) (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $alen)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; Entry layout: kind u8 @0 | name_len u16 @1 | id[32] @3 | size u64 @35 | name @43.
  (func $entry_next (param $e i32) (result i32)
    (i32.add (i32.add (local.get $e) (i32.const 43)) (i32.load16_u offset=1 (local.get $e))))
  (func $entry_is (param $e i32) (param $s i32) (param $slen i32) (result i32)
    (call $eq (i32.add (local.get $e) (i32.const 43)) (i32.load16_u offset=1 (local.get $e))
              (local.get $s) (local.get $slen)))
  ;; Write an entry at dst; return the address after it.
  (func $put_entry (param $dst i32) (param $kind i32) (param $id i32) (param $name i32) (param $nlen i32)
                   (result i32)
    (i32.store8 (local.get $dst) (local.get $kind))
    (i32.store16 offset=1 (local.get $dst) (local.get $nlen))
    (memory.copy (i32.add (local.get $dst) (i32.const 3)) (local.get $id) (i32.const 32))
    (i64.store offset=35 (local.get $dst) (i64.const 0))
    (memory.copy (i32.add (local.get $dst) (i32.const 43)) (local.get $name) (local.get $nlen))
    (i32.add (i32.add (local.get $dst) (i32.const 43)) (local.get $nlen)))
  ;; ---- end of prelude ----
