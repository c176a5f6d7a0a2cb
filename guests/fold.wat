;; fold: a recursive structural fold over a tree, one isolate per directory.
;;
;; fold(in, post): `in` is a tree (a directory) or a blob (a file); `post` is a blob holding the
;; visitor module (its blob id is the worker). For a tree, every child is folded in ONE run_many:
;; a file child goes straight to post(in=<file>, children=<empty tree>) (no fold frame for leaves),
;; a directory child to fold(in=<dir>, post) -- this module again, named by its own id from `job`.
;; The children's results are gathered into a tree under their original names, and the frame's
;; result is post(in=<this tree>, children=<that tree>). For a blob `in`, the result is
;; post(in, <empty tree>).
(module
  ;;@prelude
  (data (i32.const 16) "in")
  (data (i32.const 24) "post")
  (data (i32.const 32) "children")
  (data (i32.const 48) "fold: args need 'in' and 'post'")     ;; 31 bytes
  (data (i32.const 96) "fold: a child failed: ")              ;; 22 bytes
  (global $empty (mut i32) (i32.const 0))

  ;; The empty tree's id (put_tree with no entries), fetched once per frame.
  (func $empty_tree (result i32)
    (local $req i32)
    (if (i32.eqz (global.get $empty))
      (then
        (local.set $req (call $alloc (i32.const 4)))
        (i32.store (local.get $req) (i32.const 0))
        (global.set $empty (call $op (i32.const 4) (local.get $req) (i32.const 4)))))
    (global.get $empty))

  ;; Append a run request for `post` with args {in: (kind, id), children: (tree, cid)} at dst.
  (func $post_req (param $dst i32) (param $post i32) (param $kind i32) (param $id i32) (param $cid i32)
                  (result i32)
    (i32.store8 (local.get $dst) (i32.const 1))                           ;; worker: wasm
    (memory.copy (i32.add (local.get $dst) (i32.const 1)) (local.get $post) (i32.const 32))
    (i32.store8 offset=33 (local.get $dst) (i32.const 1))                 ;; args: inline
    (i32.store offset=34 (local.get $dst) (i32.const 2))                  ;; two entries
    (local.set $dst (call $put_entry (i32.add (local.get $dst) (i32.const 38))
                                     (local.get $kind) (local.get $id) (i32.const 16) (i32.const 2)))
    (call $put_entry (local.get $dst) (i32.const 2) (local.get $cid) (i32.const 32) (i32.const 8)))

  (func (export "warpmesh_run")
    (local $job i32) (local $e i32) (local $n i32) (local $i i32) (local $self i32)
    (local $in i32) (local $post i32) (local $t i32) (local $req i32) (local $p i32)
    (local $res i32) (local $r i32) (local $pt i32) (local $q i32) (local $children i32)
    (local $final i32) (local $out i32) (local $msg i32)
    (local.set $job (call $op (i32.const 1) (i32.const 0) (i32.const 0)))
    (local.set $self (i32.add (local.get $job) (i32.const 9)))
    (local.set $n (i32.load offset=105 (local.get $job)))
    (local.set $e (i32.add (local.get $job) (i32.const 109)))
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (if (call $entry_is (local.get $e) (i32.const 16) (i32.const 2)) (then (local.set $in (local.get $e))))
        (if (call $entry_is (local.get $e) (i32.const 24) (i32.const 4))
          (then (local.set $post (i32.add (local.get $e) (i32.const 3)))))
        (local.set $e (call $entry_next (local.get $e)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (if (i32.or (i32.eqz (local.get $in)) (i32.eqz (local.get $post)))
      (then (call $fail (i32.const 48) (i32.const 31))))

    (if (i32.eq (i32.load8_u (local.get $in)) (i32.const 1))
      (then
        ;; folding a file: just post(in, {})
        (local.set $req (call $alloc (i32.const 160)))
        (local.set $p (call $post_req (local.get $req) (local.get $post) (i32.const 1)
                                      (i32.add (local.get $in) (i32.const 3)) (call $empty_tree)))
        (local.set $final (call $op (i32.const 6) (local.get $req) (i32.sub (local.get $p) (local.get $req)))))
      (else
        ;; the children of `in`
        (local.set $t (call $op (i32.const 5) (i32.add (local.get $in) (i32.const 3)) (i32.const 32)))
        (local.set $n (i32.load (local.get $t)))
        ;; one run_many: at most 4 + n * 134 bytes (38 + 45 + 51 per post request; fold requests take 130)
        (local.set $req (call $alloc (i32.add (i32.const 4) (i32.mul (local.get $n) (i32.const 134)))))
        (i32.store (local.get $req) (local.get $n))
        (local.set $p (i32.add (local.get $req) (i32.const 4)))
        (local.set $e (i32.add (local.get $t) (i32.const 4)))
        (local.set $i (i32.const 0))
        (block $built
          (loop $build
            (br_if $built (i32.ge_u (local.get $i) (local.get $n)))
            (if (i32.eq (i32.load8_u (local.get $e)) (i32.const 1))
              (then
                (local.set $p (call $post_req (local.get $p) (local.get $post) (i32.const 1)
                                              (i32.add (local.get $e) (i32.const 3)) (call $empty_tree))))
              (else
                ;; fold(in=<dir>, post): this module, args {in: tree, post: blob}
                (i32.store8 (local.get $p) (i32.const 1))
                (memory.copy (i32.add (local.get $p) (i32.const 1)) (local.get $self) (i32.const 32))
                (i32.store8 offset=33 (local.get $p) (i32.const 1))
                (i32.store offset=34 (local.get $p) (i32.const 2))
                (local.set $p (call $put_entry (i32.add (local.get $p) (i32.const 38)) (i32.const 2)
                                               (i32.add (local.get $e) (i32.const 3)) (i32.const 16) (i32.const 2)))
                (local.set $p (call $put_entry (local.get $p) (i32.const 1) (local.get $post)
                                               (i32.const 24) (i32.const 4)))))
            (local.set $e (call $entry_next (local.get $e)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $build)))
        (local.set $res (call $op (i32.const 7) (local.get $req) (i32.sub (local.get $p) (local.get $req))))

        ;; gather the results into a tree under the children's names
        (local.set $pt (call $alloc (i32.add (i32.const 4) (i32.mul (local.get $n) (i32.const 1100)))))
        (i32.store (local.get $pt) (local.get $n))
        (local.set $q (i32.add (local.get $pt) (i32.const 4)))
        (local.set $r (i32.add (local.get $res) (i32.const 4)))
        (local.set $e (i32.add (local.get $t) (i32.const 4)))
        (local.set $i (i32.const 0))
        (block $gathered
          (loop $gather
            (br_if $gathered (i32.ge_u (local.get $i) (local.get $n)))
            (if (i32.ne (i32.load8_u (local.get $r)) (i32.const 0))
              (then
                ;; log "fold: a child failed: <name>: <error>" and trap
                (local.set $msg (call $alloc (i32.add (i32.add (i32.const 24)
                                  (i32.load16_u offset=1 (local.get $e))) (i32.load offset=1 (local.get $r)))))
                (memory.copy (local.get $msg) (i32.const 96) (i32.const 22))
                (memory.copy (i32.add (local.get $msg) (i32.const 22)) (i32.add (local.get $e) (i32.const 43))
                             (i32.load16_u offset=1 (local.get $e)))
                (i32.store16 (i32.add (i32.add (local.get $msg) (i32.const 22)) (i32.load16_u offset=1 (local.get $e)))
                             (i32.const 0x203a))  ;; ": "
                (memory.copy (i32.add (i32.add (local.get $msg) (i32.const 24)) (i32.load16_u offset=1 (local.get $e)))
                             (i32.add (local.get $r) (i32.const 5)) (i32.load offset=1 (local.get $r)))
                (call $fail (local.get $msg) (i32.add (i32.add (i32.const 24) (i32.load16_u offset=1 (local.get $e)))
                                                      (i32.load offset=1 (local.get $r))))))
            (local.set $q (call $put_entry (local.get $q) (i32.load8_u offset=1 (local.get $r))
                                           (i32.add (local.get $r) (i32.const 2))
                                           (i32.add (local.get $e) (i32.const 43)) (i32.load16_u offset=1 (local.get $e))))
            (local.set $r (i32.add (local.get $r) (i32.const 42)))
            (local.set $e (call $entry_next (local.get $e)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $gather)))
        (local.set $children (call $op (i32.const 4) (local.get $pt) (i32.sub (local.get $q) (local.get $pt))))

        ;; post(in=<this tree>, children=<results>)
        (local.set $req (call $alloc (i32.const 160)))
        (local.set $p (call $post_req (local.get $req) (local.get $post) (i32.const 2)
                                      (i32.add (local.get $in) (i32.const 3)) (local.get $children)))
        (local.set $final (call $op (i32.const 6) (local.get $req) (i32.sub (local.get $p) (local.get $req))))))

    ;; out(the final result): mode = its kind (1 blob / 2 tree), then its id
    (local.set $out (call $alloc (i32.const 33)))
    (i32.store8 (local.get $out) (i32.load8_u (local.get $final)))
    (memory.copy (i32.add (local.get $out) (i32.const 1)) (i32.add (local.get $final) (i32.const 1)) (i32.const 32))
    (drop (call $op (i32.const 8) (local.get $out) (i32.const 33))))
)
