//! The Weibull life distribution conditioned on survival to a given age: the fleet
//! prior for a component with no usable wear signal.

/// P(failure within `h` hours | survived `age` hours), for Weibull(shape k, scale λ).
pub fn weibull_conditional_cdf(shape: f64, scale_h: f64, age_h: f64, h: f64) -> f64 {
    if h <= 0.0 {
        return 0.0;
    }
    let cum = |t: f64| (t.max(0.0) / scale_h).powf(shape);
    // 1 - S(age + h) / S(age), with S(t) = exp(-(t/λ)^k).
    -(cum(age_h) - cum(age_h + h)).exp_m1()
}

/// The `q` quantile of the remaining life (hours) given survival to `age_h`.
pub fn weibull_conditional_quantile(shape: f64, scale_h: f64, age_h: f64, q: f64) -> f64 {
    let q = q.clamp(0.0, 1.0 - 1e-12);
    let cum_age = (age_h.max(0.0) / scale_h).powf(shape);
    let t = scale_h * (cum_age - (-q).ln_1p()).powf(1.0 / shape);
    (t - age_h.max(0.0)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use statrs::distribution::{ContinuousCDF, Weibull};

    #[test]
    fn at_age_zero_it_is_the_plain_weibull() {
        let w = Weibull::new(2.5, 1000.0).unwrap();
        for h in [10.0, 500.0, 1500.0] {
            let ours = weibull_conditional_cdf(2.5, 1000.0, 0.0, h);
            assert!((ours - w.cdf(h)).abs() < 1e-12, "{ours} vs {}", w.cdf(h));
        }
    }

    #[test]
    fn quantile_inverts_the_cdf_for_an_aged_part() {
        for q in [0.1, 0.5, 0.9] {
            let r = weibull_conditional_quantile(3.0, 1000.0, 800.0, q);
            let p = weibull_conditional_cdf(3.0, 1000.0, 800.0, r);
            assert!((p - q).abs() < 1e-9, "q {q}: r {r} gives {p}");
        }
    }

    #[test]
    fn an_older_part_has_less_life_left_when_wear_out_dominates() {
        let young = weibull_conditional_quantile(3.0, 1000.0, 100.0, 0.5);
        let old = weibull_conditional_quantile(3.0, 1000.0, 900.0, 0.5);
        assert!(old < young, "{old} !< {young}");
    }
}
