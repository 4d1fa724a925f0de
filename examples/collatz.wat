;; A hand-written workload: the number of Collatz steps from n down to 1.
;;
;; Input: n as 8 little-endian bytes (what an integer-range job gives each item).
;; Output: the step count in decimal ASCII, which is also a JSON number.
;; Errors: an input that is not 8 bytes, n = 0, and an n whose sequence leaves u64.
(module
  (memory (export "memory") 2 2)

  (data (i32.const 16) "the input must be 8 bytes")    ;; 25 bytes
  (data (i32.const 48) "n must be at least 1")         ;; 20 bytes
  (data (i32.const 80) "the sequence leaves u64")      ;; 23 bytes

  ;; The input goes at 1024; one item per instance, so one buffer is enough.
  (func (export "alloc") (param $len i32) (result i32)
    (if (i32.gt_u (local.get $len) (i32.const 65536))
      (then (return (i32.const 0))))
    (i32.const 1024))

  ;; An error result: bit 63 set, the message's address and length below it.
  (func $fail (param $at i32) (param $len i32) (result i64)
    (i64.or
      (i64.const -9223372036854775808)
      (i64.or
        (i64.shl (i64.extend_i32_u (local.get $at)) (i64.const 32))
        (i64.extend_i32_u (local.get $len)))))

  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $n i64)
    (local $steps i64)
    (local $at i32)
    (if (i32.ne (local.get $len) (i32.const 8))
      (then (return (call $fail (i32.const 16) (i32.const 25)))))
    (local.set $n (i64.load (local.get $ptr)))
    (if (i64.eqz (local.get $n))
      (then (return (call $fail (i32.const 48) (i32.const 20)))))
    (block $done
      (loop $step
        (br_if $done (i64.eq (local.get $n) (i64.const 1)))
        (if (i32.wrap_i64 (i64.and (local.get $n) (i64.const 1)))
          (then
            ;; 3n + 1 must fit: n ≤ (2^64 − 2) / 3.
            (if (i64.gt_u (local.get $n) (i64.const 6148914691236517204))
              (then (return (call $fail (i32.const 80) (i32.const 23)))))
            (local.set $n (i64.add (i64.mul (local.get $n) (i64.const 3)) (i64.const 1))))
          (else
            (local.set $n (i64.shr_u (local.get $n) (i64.const 1)))))
        (local.set $steps (i64.add (local.get $steps) (i64.const 1)))
        (br $step)))
    ;; Decimal digits, written backwards to end at 544.
    (local.set $at (i32.const 544))
    (loop $digit
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i64.store8 (local.get $at)
        (i64.add (i64.const 48) (i64.rem_u (local.get $steps) (i64.const 10))))
      (local.set $steps (i64.div_u (local.get $steps) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $steps) (i64.const 0))))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $at)) (i64.const 32))
      (i64.extend_i32_u (i32.sub (i32.const 544) (local.get $at))))))
