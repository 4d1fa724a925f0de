;; A deliberately broken workload, for the tests of per-item failures. The first input byte
;; picks how it breaks; any other input is echoed back.
;;
;;    0  traps on `unreachable`              7  asks memory.grow past the ABI's maximum
;;    1  loops forever                          and reports the refusal as its error
;;    2  stores out of bounds                8  returns a 2 KiB error message (cut to 1 KiB)
;;    3  returns an output out of bounds     9  divides INT_MIN by -1
;;    4  returns an output over 256 KiB     10  converts NaN to an integer
;;    5  recurses until the stack runs out  11  converts 1e10 to an i32
;;    6  divides by zero                    12  calls through a null table entry
;;                                          13  asks table.grow past the ABI's maximum
;;                                              and reports the refusal as its error
;;
;; And `alloc` refuses any 3-byte input (returns 0) and puts any 5-byte input where it does
;; not fit (2 bytes before the end of memory).
(module
  (memory (export "memory") 5)
  (table 1 funcref)
  (type $nothing (func))
  (data (i32.const 16) "memory.grow refused")       ;; 19 bytes
  (data (i32.const 48) "table.grow refused")        ;; 18 bytes

  (func (export "alloc") (param $len i32) (result i32)
    (if (i32.eq (local.get $len) (i32.const 3))
      (then (return (i32.const 0))))
    (if (i32.eq (local.get $len) (i32.const 5))
      (then (return (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 2)))))
    (i32.const 1024))

  (func $recurse (param $depth i64) (result i64)
    (i64.add (call $recurse (i64.add (local.get $depth) (i64.const 1))) (i64.const 1)))

  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $how i32)
    (if (i32.eqz (local.get $len))
      (then (return (i64.const 0))))
    (local.set $how (i32.load8_u (local.get $ptr)))
    (if (i32.eq (local.get $how) (i32.const 0))
      (then unreachable))
    (if (i32.eq (local.get $how) (i32.const 1))
      (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $how) (i32.const 2))
      (then (i32.store (i32.const -4) (i32.const 1))))
    ;; 64 bytes at 2^31 − 64: far outside a 5-page memory.
    (if (i32.eq (local.get $how) (i32.const 3))
      (then (return (i64.const 0x7fffffc000000040))))
    ;; 300,000 bytes from 0: inside the memory, over the output limit.
    (if (i32.eq (local.get $how) (i32.const 4))
      (then (return (i64.const 300000))))
    (if (i32.eq (local.get $how) (i32.const 5))
      (then (return (call $recurse (i64.const 0)))))
    ;; The divisors below are zero and -1, computed from $how.
    (if (i32.eq (local.get $how) (i32.const 6))
      (then (return (i64.extend_i32_u
        (i32.div_u (i32.const 1) (i32.sub (local.get $how) (i32.const 6)))))))
    ;; memory.grow fails: an error of 19 bytes at 16.
    (if (i32.eq (local.get $how) (i32.const 7))
      (then (if (i32.eq (memory.grow (i32.const 2000)) (i32.const -1))
        (then (return (i64.const 0x8000001000000013))))))
    ;; An error of 2,048 bytes at 4,096.
    (if (i32.eq (local.get $how) (i32.const 8))
      (then (return (i64.const 0x8000100000000800))))
    (if (i32.eq (local.get $how) (i32.const 9))
      (then (return (i64.extend_i32_s
        (i32.div_s (i32.const 0x80000000) (i32.sub (i32.const 8) (local.get $how)))))))
    (if (i32.eq (local.get $how) (i32.const 10))
      (then (return (i64.extend_i32_s (i32.trunc_f32_s (f32.const nan))))))
    (if (i32.eq (local.get $how) (i32.const 11))
      (then (return (i64.extend_i32_s (i32.trunc_f64_s (f64.const 1e10))))))
    (if (i32.eq (local.get $how) (i32.const 12))
      (then (call_indirect (type $nothing) (i32.const 0))))
    ;; table.grow fails: an error of 18 bytes at 48.
    (if (i32.eq (local.get $how) (i32.const 13))
      (then (if (i32.eq (table.grow 0 (ref.null func) (i32.const 100000)) (i32.const -1))
        (then (return (i64.const 0x8000003000000012))))))
    ;; Anything else: echo the input where it lies.
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len)))))
