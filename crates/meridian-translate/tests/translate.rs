//! Integration tests of the translator, one module per topic.

mod translate {
    pub mod envoy;
    pub mod props;
    pub mod table;
}

use meridian_model::{parse_documents, ConfigSet, Endpoint, EndpointSet, Health};
use meridian_translate::{translate, Resources, TranslateOptions, Viewer};

pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

pub fn must_parse(yaml: &str) -> ConfigSet {
    let set: ConfigSet = match parse_documents(yaml, "test.yaml") {
        Ok(objs) => objs.into_iter().collect(),
        Err(errs) => panic!("parse failed: {errs:?}"),
    };
    let errs = set.validate();
    assert!(
        errs.is_empty(),
        "invalid test config: {:?}",
        errs.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    set
}

/// The resources of the default proxy group of `region`, with default options.
pub fn must_translate(config: &ConfigSet, endpoints: &EndpointSet, region: &str) -> Resources {
    translate(config, endpoints, &Viewer::new(region, None), &TranslateOptions::default()).unwrap()
}

pub fn example() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/multi-region.yaml"
    );
    std::fs::read_to_string(path).expect("examples/multi-region.yaml exists")
}

/// Two zones per region, two endpoints per zone, for each service; the
/// second endpoint of zone b is unhealthy.
pub fn endpoints_for(services: &[&str]) -> EndpointSet {
    let mut set = EndpointSet::new();
    for (s, svc) in services.iter().enumerate() {
        for (r, region) in REGIONS.iter().enumerate() {
            for (z, zone) in ["a", "b"].iter().enumerate() {
                for i in 0..2u8 {
                    set.insert(Endpoint {
                        service: svc.to_string(),
                        cluster: format!("{region}-k8s"),
                        region: region.to_string(),
                        zone: format!("{region}-{zone}"),
                        address: format!("10.{s}.{}.{}", r * 2 + z, i + 1),
                        port: 0,
                        weight: 1 + u32::from(i),
                        health: if z == 1 && i == 1 {
                            Health::Unhealthy
                        } else {
                            Health::Healthy
                        },
                    });
                }
            }
        }
    }
    set
}
