use serde::Serialize;

use crate::{
    error::Errors,
    parse::spec_from_json,
    spec::{ClusterSpec, ListenerSpec, PrivateKeyPem, RegionSpec, RouteSpec, SecretSpec, ServiceSpec},
    validate_name, Kind, ModelError, MAX_OBJECT_BYTES,
};

/// One named object of some kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: Kind,
    pub name: String,
    pub spec: Spec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Service(ServiceSpec),
    Route(RouteSpec),
    Listener(ListenerSpec),
    Secret(SecretSpec),
    Region(RegionSpec),
    Cluster(ClusterSpec),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Service(_) => Kind::Service,
            Spec::Route(_) => Kind::Route,
            Spec::Listener(_) => Kind::Listener,
            Spec::Secret(_) => Kind::Secret,
            Spec::Region(_) => Kind::Region,
            Spec::Cluster(_) => Kind::Cluster,
        }
    }

    fn to_json_value(&self) -> serde_json::Value {
        // Serializing these plain structs cannot fail: no maps with
        // non-string keys, no custom serializers that error.
        let v = match self {
            Spec::Service(s) => serde_json::to_value(s),
            Spec::Route(s) => serde_json::to_value(s),
            Spec::Listener(s) => serde_json::to_value(s),
            Spec::Secret(s) => serde_json::to_value(s),
            Spec::Region(s) => serde_json::to_value(s),
            Spec::Cluster(s) => serde_json::to_value(s),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

impl Object {
    pub fn new(name: impl Into<String>, spec: Spec) -> Self {
        Self {
            kind: spec.kind(),
            name: name.into(),
            spec,
        }
    }

    /// Checks this object on its own (name, size, every field). Secrets'
    /// certificates are checked against the current wall-clock time.
    pub fn validate(&self) -> Vec<ModelError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.validate_at(now)
    }

    /// As [`Object::validate`], with certificate expiry checked at
    /// `now_unix` (seconds since the epoch).
    pub fn validate_at(&self, now_unix: i64) -> Vec<ModelError> {
        let mut errs = Errors::new(self.kind, &self.name);
        if let Err(reason) = validate_name(&self.name) {
            errs.push("", reason);
        }
        if self.kind != self.spec.kind() {
            errs.push(
                "",
                format!(
                    "kind {} does not match a {} spec",
                    self.kind,
                    self.spec.kind()
                ),
            );
        }
        let size = self.spec_to_json_bytes().len();
        if size > MAX_OBJECT_BYTES {
            errs.push(
                "",
                format!(
                    "object is {size} bytes as JSON, at most {MAX_OBJECT_BYTES} (1 MiB) allowed"
                ),
            );
        }
        match &self.spec {
            Spec::Service(s) => s.validate(&mut errs),
            Spec::Route(s) => s.validate(&mut errs),
            Spec::Listener(s) => s.validate(&mut errs),
            Spec::Secret(s) => s.validate(now_unix, &mut errs),
            Spec::Region(s) => s.validate(&self.name, &mut errs),
            Spec::Cluster(s) => s.validate(&mut errs),
        }
        errs.list
    }

    /// Canonical stored form: the spec alone as compact JSON, fields in
    /// declaration order, unset optional fields left out. Deterministic, so
    /// equal specs give equal bytes.
    pub fn spec_to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.spec.to_json_value()).unwrap_or_default()
    }

    /// Reads the stored form back. Fails on unknown fields like parsing does:
    /// a stored object that does not decode is a bug, not data to guess at.
    pub fn from_stored(kind: &str, name: &str, bytes: &[u8]) -> Result<Object, ModelError> {
        let kind: Kind = kind.parse()?;
        let spec = spec_from_json(kind, bytes)
            .map_err(|(path, reason)| ModelError::new(kind, name, path, reason))?;
        Ok(Object {
            kind,
            name: name.to_string(),
            spec,
        })
    }

    /// `{kind, name, spec}` for showing to people: secrets' private keys are
    /// replaced by `"<redacted>"`.
    pub fn to_redacted_json(&self) -> serde_json::Value {
        let mut spec = self.spec.to_json_value();
        if let (Spec::Secret(_), Some(map)) = (&self.spec, spec.as_object_mut()) {
            map.insert("privateKey".into(), PrivateKeyPem::REDACTED.into());
        }
        #[derive(Serialize)]
        struct Out<'a> {
            kind: &'a str,
            name: &'a str,
            spec: serde_json::Value,
        }
        serde_json::to_value(Out {
            kind: self.kind.as_str(),
            name: &self.name,
            spec,
        })
        .unwrap_or_default()
    }
}
