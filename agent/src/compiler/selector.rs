//! Label selectors, validated once and then matched many times.
use std::collections::BTreeSet;

use crate::model::{LabelSelector, Labels};

use super::problems::{PolicyError, Problems};

/// A validated selector. "matchLabels and matchExpressions ... are ANDed"; `{}` matches all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    labels: Vec<(String, String)>,
    expressions: Vec<Expression>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expression {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    /// Validates `raw`; `None` (after reporting) when an expression is invalid, since a selector
    /// with a dropped term would match more than written.
    pub fn parse(raw: &LabelSelector, field: &str, problems: &mut Problems) -> Option<Self> {
        let labels = raw
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut expressions = Vec::new();
        let mut ok = true;
        for (i, req) in raw.match_expressions.iter().flatten().enumerate() {
            let field = format!("{field}.matchExpressions[{i}]");
            let values: BTreeSet<String> = req.values.iter().flatten().cloned().collect();
            let expr = match req.operator.as_str() {
                // "If the operator is In or NotIn, the values array must be non-empty. If the
                // operator is Exists or DoesNotExist, the values array must be empty."
                "In" | "NotIn" if values.is_empty() => Err(PolicyError::SelectorValuesRequired {
                    operator: req.operator.clone(),
                }),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    Err(PolicyError::SelectorValuesForbidden {
                        operator: req.operator.clone(),
                    })
                }
                "In" => Ok(Expression::In(req.key.clone(), values)),
                "NotIn" => Ok(Expression::NotIn(req.key.clone(), values)),
                "Exists" => Ok(Expression::Exists(req.key.clone())),
                "DoesNotExist" => Ok(Expression::DoesNotExist(req.key.clone())),
                other => Err(PolicyError::UnknownSelectorOperator {
                    operator: other.to_owned(),
                }),
            };
            match expr {
                Ok(expr) => expressions.push(expr),
                Err(err) => {
                    problems.error(format!("{field}.operator"), err);
                    ok = false;
                }
            }
        }
        ok.then_some(Self {
            labels,
            expressions,
        })
    }

    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self {
            labels: Vec::new(),
            expressions: Vec::new(),
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
            && self.expressions.iter().all(|e| e.matches(labels))
    }
}

impl Expression {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Self::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            // NotIn also matches objects without the key, as in Kubernetes.
            Self::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Self::Exists(key) => labels.contains_key(key),
            Self::DoesNotExist(key) => !labels.contains_key(key),
        }
    }
}
