//! The product's interpreter of compiled state (`palisade::explain`), under the name the
//! property tests have always used.

pub use palisade::explain::interpreter::*;
pub use palisade::explain::loadable::validate;
