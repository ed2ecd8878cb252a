//! Resource names: `kbs:///<repository>/<type>/<tag>` (the form sealed secrets and init-data
//! use; the authority, a broker's address, is left empty because the pod's measured init-data
//! names its broker) and the broker path `/kbs/v0/resource/<repository>/<type>/<tag>`.

/// One resource of a broker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceUri {
    pub repository: String,
    pub kind: String,
    pub tag: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ResourceUriError {
    #[error("{0:?} is not a resource name: expected kbs:///<repository>/<type>/<tag>")]
    Form(String),
    #[error("{uri:?}: segment {segment:?} may hold only letters, digits, '-', '_' and '.' (and not be '.' or '..')")]
    Segment { uri: String, segment: String },
}

impl ResourceUri {
    /// Parses `kbs:///repo/type/tag` (also `kbs://<broker>/repo/type/tag`: the broker part is
    /// ignored, the pod's init-data names its broker).
    pub fn parse(text: &str) -> Result<Self, ResourceUriError> {
        let rest = text
            .strip_prefix("kbs://")
            .ok_or_else(|| ResourceUriError::Form(text.to_owned()))?;
        let path = match rest.find('/') {
            Some(at) => &rest[at + 1..],
            None => return Err(ResourceUriError::Form(text.to_owned())),
        };
        Self::from_path(text, path)
    }

    /// From `<repository>/<type>/<tag>`.
    pub fn from_path(context: &str, path: &str) -> Result<Self, ResourceUriError> {
        let segments: Vec<&str> = path.split('/').collect();
        let [repository, kind, tag] = segments.as_slice() else {
            return Err(ResourceUriError::Form(context.to_owned()));
        };
        for segment in [repository, kind, tag] {
            let valid = !segment.is_empty()
                && *segment != "."
                && *segment != ".."
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(ResourceUriError::Segment {
                    uri: context.to_owned(),
                    segment: (*segment).to_owned(),
                });
            }
        }
        Ok(Self {
            repository: (*repository).to_owned(),
            kind: (*kind).to_owned(),
            tag: (*tag).to_owned(),
        })
    }

    /// The broker's path for it.
    pub fn path(&self) -> String {
        format!("/kbs/v0/resource/{self}")
    }
}

impl std::fmt::Display for ResourceUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.repository, self.kind, self.tag)
    }
}
