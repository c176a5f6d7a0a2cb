;; Runs itself with its own args (a cycle) and outputs the answer it got: the error message.
(module
  ;;@prelude
  (func (export "warpmesh_run")
    (local $job i32) (local $req i32) (local $n i32) (local $buf i32)
    (local.set $job (call $op (i32.const 1) (i32.const 0) (i32.const 0)))
    (local.set $req (call $alloc (i32.const 66)))
    (i32.store8 (local.get $req) (i32.const 1))
    (memory.copy (i32.add (local.get $req) (i32.const 1)) (i32.add (local.get $job) (i32.const 9)) (i32.const 32))
    (i32.store8 offset=33 (local.get $req) (i32.const 2))
    (memory.copy (i32.add (local.get $req) (i32.const 34)) (i32.add (local.get $job) (i32.const 41)) (i32.const 32))
    (local.set $n (call $call (i32.const 6) (local.get $req) (i32.const 66)))
    (if (i32.ge_s (local.get $n) (i32.const 0)) (then unreachable))
    (local.set $n (i32.sub (i32.const 0) (local.get $n)))
    (local.set $buf (call $alloc (i32.add (local.get $n) (i32.const 1))))
    (i32.store8 (local.get $buf) (i32.const 3))
    (drop (call $read (i32.add (local.get $buf) (i32.const 1)) (local.get $n)))
    (drop (call $op (i32.const 8) (local.get $buf) (i32.add (local.get $n) (i32.const 1)))))
)
