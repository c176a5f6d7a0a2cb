;; Test driver: performs a script of raw ABI calls and outputs a transcript of the answers.
;;
;; args: script (blob) = steps, each  op u32 | len u32 | payload[len]
;;   op 1..9 (or any other number): call(op, payload, len)
;;   op 1000: call(payload.op u32, payload.ptr u32, payload.len u32)   -- raw pointers
;;   op 1001: read(payload.ptr u32, payload.cap u32)                   -- raw read, records its result only
;; transcript = records, each  r i32 | n u32 | bytes[n]  (the response, or the error message)
;; The transcript is the output (inline blob) unless the script itself called op 8 (out).
(module
  ;;@prelude
  (data (i32.const 16) "script")

  (func $ensure (param $end i32)
    (local $have i32)
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                                         (i32.const 65535)) (i32.const 16)))
                        (i32.const -1))
              (then unreachable)))))

  (func (export "warpmesh_run")
    (local $job i32) (local $e i32) (local $n i32) (local $i i32) (local $script i32)
    (local $pos i32) (local $end i32) (local $op i32) (local $len i32) (local $pl i32) (local $r i32)
    (local $tbase i32) (local $tpos i32) (local $outs i32) (local $abs i32)
    (local.set $job (call $op (i32.const 1) (i32.const 0) (i32.const 0)))
    (local.set $n (i32.load offset=105 (local.get $job)))
    (local.set $e (i32.add (local.get $job) (i32.const 109)))
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (if (call $entry_is (local.get $e) (i32.const 16) (i32.const 6))
          (then (local.set $script (i32.add (local.get $e) (i32.const 3)))))
        (local.set $e (call $entry_next (local.get $e)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (if (i32.eqz (local.get $script)) (then unreachable))
    (local.set $pos (call $op (i32.const 2) (local.get $script) (i32.const 32)))
    (local.set $end (i32.add (local.get $pos) (global.get $resp_len)))
    (local.set $tbase (call $alloc (i32.const 0)))
    (call $ensure (i32.add (local.get $tbase) (i32.const 1)))
    (i32.store8 (local.get $tbase) (i32.const 3))
    (local.set $tpos (i32.add (local.get $tbase) (i32.const 1)))
    (block $stop
      (loop $step
        (br_if $stop (i32.ge_u (local.get $pos) (local.get $end)))
        (local.set $op (i32.load (local.get $pos)))
        (local.set $len (i32.load offset=4 (local.get $pos)))
        (local.set $pl (i32.add (local.get $pos) (i32.const 8)))
        (local.set $pos (i32.add (local.get $pl) (local.get $len)))
        (if (i32.eq (local.get $op) (i32.const 1001))
          (then
            (local.set $r (call $read (i32.load (local.get $pl)) (i32.load offset=4 (local.get $pl))))
            (call $ensure (i32.add (local.get $tpos) (i32.const 8)))
            (i32.store (local.get $tpos) (local.get $r))
            (i32.store offset=4 (local.get $tpos) (i32.const 0))
            (local.set $tpos (i32.add (local.get $tpos) (i32.const 8)))
            (br $step)))
        (if (i32.eq (local.get $op) (i32.const 1000))
          (then
            (if (i32.eq (i32.load (local.get $pl)) (i32.const 8)) (then (local.set $outs (i32.const 1))))
            (local.set $r (call $call (i32.load (local.get $pl)) (i32.load offset=4 (local.get $pl))
                                      (i32.load offset=8 (local.get $pl)))))
          (else
            (if (i32.eq (local.get $op) (i32.const 8)) (then (local.set $outs (i32.const 1))))
            (local.set $r (call $call (local.get $op) (local.get $pl) (local.get $len)))))
        (local.set $abs (select (i32.sub (i32.const 0) (local.get $r)) (local.get $r)
                                (i32.lt_s (local.get $r) (i32.const 0))))
        (call $ensure (i32.add (i32.add (local.get $tpos) (i32.const 8)) (local.get $abs)))
        (i32.store (local.get $tpos) (local.get $r))
        (i32.store offset=4 (local.get $tpos) (local.get $abs))
        (if (i32.gt_u (local.get $abs) (i32.const 0))
          (then (drop (call $read (i32.add (local.get $tpos) (i32.const 8)) (local.get $abs)))))
        (local.set $tpos (i32.add (i32.add (local.get $tpos) (i32.const 8)) (local.get $abs)))
        (br $step)))
    (if (i32.eqz (local.get $outs))
      (then (drop (call $call (i32.const 8) (local.get $tbase) (i32.sub (local.get $tpos) (local.get $tbase)))))))
)
