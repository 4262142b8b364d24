//! The measurement, tag and field names the InfluxDB sink writes, in one place: the
//! encoder below, the README, the Grafana dashboards' test and the sink's test all read
//! them from here.

use influxdb2::models::DataPoint;
use wearcast_protocol::WindowAggregate;

use crate::model::{HealthStatus, RulEstimate};

/// One stored telemetry window of one channel (timestamp: the window's start).
pub const WINDOW: &str = "wearcast_window";
/// One component's health estimate from an analysis cycle (timestamp: when computed).
pub const HEALTH: &str = "wearcast_health";

/// Tag keys.
pub mod tag {
    pub const TENANT: &str = "tenant";
    pub const CUSTOMER: &str = "customer";
    pub const MACHINE: &str = "machine";
    /// The component key (`spindle_bearing`); `op` for operating conditions.
    pub const COMPONENT: &str = "component";
    /// The whole channel name, `<component>.<quantity>`.
    pub const CHANNEL: &str = "channel";
}

/// Field keys.
pub mod field {
    /// Samples in the window (integer).
    pub const COUNT: &str = "count";
    pub const MEAN: &str = "mean";
    pub const MIN: &str = "min";
    pub const MAX: &str = "max";
    /// Sample standard deviation (n − 1).
    pub const STD: &str = "std";
    /// The window's latest reading.
    pub const LAST: &str = "last";
    /// 0 new … 1 end of life.
    pub const HEALTH_INDEX: &str = "health_index";
    /// Remaining useful life quantiles in hours; absent while the model has none.
    pub const RUL_P10_H: &str = "rul_p10_h";
    pub const RUL_P50_H: &str = "rul_p50_h";
    pub const RUL_P90_H: &str = "rul_p90_h";
    /// [`super::status_code`] of the component's status (integer).
    pub const STATUS_CODE: &str = "status_code";
}

/// A measurement with every tag and field it can carry.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    pub name: &'static str,
    pub tags: &'static [&'static str],
    pub fields: &'static [&'static str],
}

/// Everything the sink writes.
pub const MEASUREMENTS: &[Measurement] = &[
    Measurement {
        name: WINDOW,
        tags: &[
            tag::TENANT,
            tag::CUSTOMER,
            tag::MACHINE,
            tag::COMPONENT,
            tag::CHANNEL,
        ],
        fields: &[
            field::COUNT,
            field::MEAN,
            field::MIN,
            field::MAX,
            field::STD,
            field::LAST,
        ],
    },
    Measurement {
        name: HEALTH,
        tags: &[tag::TENANT, tag::CUSTOMER, tag::MACHINE, tag::COMPONENT],
        fields: &[
            field::HEALTH_INDEX,
            field::RUL_P10_H,
            field::RUL_P50_H,
            field::RUL_P90_H,
            field::STATUS_CODE,
        ],
    },
];

/// The status as a number a graph can draw and Grafana can map back to text (a string
/// field would be invisible to InfluxQL's numeric functions and to VictoriaMetrics).
pub fn status_code(status: HealthStatus) -> i64 {
    match status {
        HealthStatus::Unknown => 0,
        HealthStatus::Healthy => 1,
        HealthStatus::Degrading => 2,
        HealthStatus::Critical => 3,
        HealthStatus::Failed => 4,
    }
}

/// Where a machine belongs, for the tags of its points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub tenant: String,
    pub customer: String,
}

/// What waits in the sink's queue: owned and small; turned into line protocol by the
/// writer task, off the ingest path.
#[derive(Clone, Debug)]
pub enum SinkPoint {
    Window {
        customer: String,
        window: WindowAggregate,
    },
    Health {
        owner: Owner,
        machine: String,
        component: String,
        estimate: HealthFields,
    },
}

/// The part of a [`RulEstimate`] the sink writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthFields {
    pub computed_at_ms: i64,
    pub status: HealthStatus,
    pub health_index: f64,
    pub rul_p10_h: Option<f64>,
    pub rul_p50_h: Option<f64>,
    pub rul_p90_h: Option<f64>,
}

impl From<&RulEstimate> for HealthFields {
    fn from(e: &RulEstimate) -> Self {
        Self {
            computed_at_ms: e.computed_at.0,
            status: e.status,
            health_index: e.health_index,
            rul_p10_h: e.rul_p10_h,
            rul_p50_h: e.rul_p50_h,
            rul_p90_h: e.rul_p90_h,
        }
    }
}

impl SinkPoint {
    /// The point in InfluxDB's model, timestamp in milliseconds. Empty tag values and
    /// non-finite numbers are left out (line protocol has no way to say them).
    pub fn to_data_point(&self) -> Option<DataPoint> {
        let tagged = |b: influxdb2::models::data_point::DataPointBuilder, k: &str, v: &str| {
            if v.is_empty() { b } else { b.tag(k, v) }
        };
        let finite = |b: influxdb2::models::data_point::DataPointBuilder, k: &str, v: f64| {
            if v.is_finite() { b.field(k, v) } else { b }
        };
        let point = match self {
            Self::Window {
                customer,
                window: w,
            } => {
                let component = w.channel.component();
                let mut b = DataPoint::builder(WINDOW);
                b = tagged(b, tag::TENANT, w.tenant.as_str());
                b = tagged(b, tag::CUSTOMER, customer);
                b = tagged(b, tag::MACHINE, w.machine.as_str());
                b = tagged(b, tag::COMPONENT, component);
                b = tagged(b, tag::CHANNEL, w.channel.as_str());
                b = b.field(field::COUNT, i64::try_from(w.count).unwrap_or(i64::MAX));
                for (k, v) in [
                    (field::MEAN, w.mean),
                    (field::MIN, w.min),
                    (field::MAX, w.max),
                    (field::STD, w.std),
                    (field::LAST, w.last),
                ] {
                    b = finite(b, k, v);
                }
                b.timestamp(w.start.0)
            }
            Self::Health {
                owner,
                machine,
                component,
                estimate: e,
            } => {
                let mut b = DataPoint::builder(HEALTH);
                b = tagged(b, tag::TENANT, &owner.tenant);
                b = tagged(b, tag::CUSTOMER, &owner.customer);
                b = tagged(b, tag::MACHINE, machine);
                b = tagged(b, tag::COMPONENT, component);
                b = b.field(field::STATUS_CODE, status_code(e.status));
                b = finite(b, field::HEALTH_INDEX, e.health_index);
                for (k, v) in [
                    (field::RUL_P10_H, e.rul_p10_h),
                    (field::RUL_P50_H, e.rul_p50_h),
                    (field::RUL_P90_H, e.rul_p90_h),
                ] {
                    if let Some(v) = v {
                        b = finite(b, k, v);
                    }
                }
                b.timestamp(e.computed_at_ms)
            }
        };
        point.build().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use influxdb2::models::WriteDataPoint;
    use wearcast_protocol::UnixMs;

    fn line(p: &SinkPoint) -> String {
        let mut out = Vec::new();
        p.to_data_point()
            .unwrap()
            .write_data_point_to(&mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_window_is_one_line_with_the_documented_names_and_its_start_in_ms() {
        let p = SinkPoint::Window {
            customer: "plant co".into(),
            window: WindowAggregate {
                tenant: "acme".parse().unwrap(),
                machine: "m-1".parse().unwrap(),
                channel: "spindle_bearing.vibration_rms".parse().unwrap(),
                start: UnixMs(1_000),
                end: UnixMs(61_000),
                count: 3,
                mean: 1.5,
                min: 1.0,
                max: 2.0,
                std: 0.5,
                last: 2.0,
                last_ts: UnixMs(50_000),
            },
        };
        assert_eq!(
            line(&p),
            "wearcast_window,channel=spindle_bearing.vibration_rms,component=spindle_bearing,\
             customer=plant\\ co,machine=m-1,tenant=acme \
             count=3i,last=2,max=2,mean=1.5,min=1,std=0.5 1000\n"
        );
    }

    #[test]
    fn a_health_point_leaves_out_the_quantiles_the_model_does_not_have() {
        let p = SinkPoint::Health {
            owner: Owner {
                tenant: "acme".into(),
                customer: String::new(),
            },
            machine: "m-1".into(),
            component: "pump".into(),
            estimate: HealthFields {
                computed_at_ms: 7,
                status: HealthStatus::Degrading,
                health_index: 0.25,
                rul_p10_h: Some(10.0),
                rul_p50_h: Some(f64::INFINITY),
                rul_p90_h: None,
            },
        };
        assert_eq!(
            line(&p),
            "wearcast_health,component=pump,machine=m-1,tenant=acme \
             health_index=0.25,rul_p10_h=10,status_code=2i 7\n"
        );
    }

    #[test]
    fn every_documented_name_is_distinct_within_its_measurement() {
        for m in MEASUREMENTS {
            let mut names: Vec<_> = m.tags.iter().chain(m.fields).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), m.tags.len() + m.fields.len(), "{}", m.name);
        }
    }
}
