//! Counter arithmetic on JSON numbers.
//!
//! Increments are summed in stamp order (the row keeps them sorted), so even floating-point
//! sums are bit-identical in every region. Integers stay exact `i64` until a sum overflows or a
//! float joins in; from then on the sum is an `f64`, clamped to the finite range so a counter
//! always materializes as a JSON number.

use serde_json::Number;

/// A running counter value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sum {
    /// Exact while every term was an `i64` and nothing overflowed.
    Int(i64),
    /// Approximate, always finite.
    Float(f64),
}

impl Sum {
    /// The value of a single JSON number.
    pub(crate) fn of(number: &Number) -> Sum {
        match number.as_i64() {
            Some(int) => Sum::Int(int),
            None => Sum::Float(clamp(number.as_f64().unwrap_or(0.0))),
        }
    }

    /// This sum plus `number`.
    pub(crate) fn add(self, number: &Number) -> Sum {
        match (self, Sum::of(number)) {
            (Sum::Int(a), Sum::Int(b)) => match a.checked_add(b) {
                Some(sum) => Sum::Int(sum),
                None => Sum::Float(clamp(a as f64 + b as f64)),
            },
            (a, b) => Sum::Float(clamp(a.as_f64() + b.as_f64())),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Sum::Int(int) => int as f64,
            Sum::Float(float) => float,
        }
    }

    /// The JSON number a counter shows.
    pub(crate) fn to_number(self) -> Number {
        match self {
            Sum::Int(int) => Number::from(int),
            Sum::Float(float) => Number::from_f64(float).unwrap_or_else(|| Number::from(0)),
        }
    }
}

/// Keeps sums finite: an overflowing float sum saturates instead of becoming infinite (which
/// JSON cannot express) or, later, NaN.
fn clamp(float: f64) -> f64 {
    if float.is_nan() {
        0.0
    } else {
        float.clamp(f64::MIN, f64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_stay_exact() {
        let sum = Sum::Int(2).add(&Number::from(-5)).add(&Number::from(10));
        assert_eq!(sum.to_number(), Number::from(7));
    }

    #[test]
    fn integer_overflow_turns_into_a_float() {
        let sum = Sum::Int(i64::MAX).add(&Number::from(1));
        assert!(matches!(sum, Sum::Float(_)));
        assert!(sum.to_number().as_f64().is_some_and(|f| f > 9.2e18));
    }

    #[test]
    fn floats_saturate_instead_of_becoming_infinite() {
        let big = Number::from_f64(f64::MAX);
        let sum = big.as_ref().map(|big| Sum::of(big).add(big));
        assert_eq!(
            sum.map(|sum| sum.to_number().as_f64()),
            Some(Some(f64::MAX))
        );
    }

    #[test]
    fn a_float_term_makes_the_sum_a_float() {
        let half = Number::from_f64(0.5);
        let sum = half.as_ref().map(|half| Sum::Int(1).add(half).to_number());
        assert_eq!(sum, Number::from_f64(1.5));
    }
}
