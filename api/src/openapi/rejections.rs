//! What axum's extractors refuse before a handler runs, written into every
//! operation that has the input they read: a JSON body (400 not JSON, 413
//! too large, 415 not `application/json`, 422 the wrong shape), path
//! parameters (400 the wrong type, e.g. an id that is not a UUID) or query
//! parameters (400 the wrong type). The error envelope gives each the
//! uniform error body.

use utoipa::openapi::{
    ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder,
    path::{Operation, ParameterIn},
};

/// Adds error `status` with `description` to `op`, or appends the
/// description to the one it has.
pub fn add_error(op: &mut Operation, status: u16, description: &str) {
    let key = status.to_string();
    match op.responses.responses.get_mut(&key) {
        Some(RefOr::T(existing)) => {
            if !existing.description.contains(description) {
                existing.description = format!("{}; {description}", existing.description);
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build();
            op.responses.responses.insert(key, RefOr::T(response));
        }
    }
}

fn has_parameter(op: &Operation, place: ParameterIn) -> bool {
    op.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => p.parameter_in == place,
        RefOr::Ref(_) => false,
    })
}

/// Adds the extractors' refusals to every operation.
pub fn apply(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let ops = [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.patch.as_mut(),
            item.delete.as_mut(),
        ];
        for op in ops.into_iter().flatten() {
            if has_parameter(op, ParameterIn::Path) {
                add_error(
                    op,
                    400,
                    "`bad_request`: a path parameter is not of its type (an id that is not a UUID)",
                );
            }
            if has_parameter(op, ParameterIn::Query) {
                add_error(
                    op,
                    400,
                    "`bad_request`: a query parameter is not of its type",
                );
            }
            if op.request_body.is_some() {
                add_error(op, 400, "`bad_request`: the body is not JSON");
                add_error(op, 413, "`payload_too_large`: the body is over 2 MiB");
                add_error(
                    op,
                    415,
                    "`unsupported_media_type`: the body is not `Content-Type: application/json`",
                );
                add_error(
                    op,
                    422,
                    "`unprocessable_entity`: a field is missing or of the wrong type",
                );
            }
        }
    }
}
