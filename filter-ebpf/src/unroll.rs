//! Hand-unrolled bounded repetition for the verifier.
//!
//! Without CAP_PERFMON the verifier also walks the mispredicted side of branches whose
//! outcome it knows (Spectre v1 hardening); past a `for` loop's last iteration that
//! speculative walk never meets the bound again and runs into the verifier's complexity
//! limits (seen as "The sequence of 8193 jumps is too complex"). Writing the repetitions out
//! avoids the loop altogether. Both IPv6 extension-header walks (XDP and TC egress) use it.

/// Expand `$body` once per IPv6 extension header nodegate follows (`IPV6_EXT_MAX`); the
/// body typically ends the enclosing function early (`return`, `?`) when the chain ends.
macro_rules! per_extension_header {
    ($($body:tt)*) => {{
        const _: () = assert!(
            filter_common::IPV6_EXT_MAX == 8,
            "per_extension_header! writes its body out IPV6_EXT_MAX times"
        );
        { $($body)* }
        { $($body)* }
        { $($body)* }
        { $($body)* }
        { $($body)* }
        { $($body)* }
        { $($body)* }
        { $($body)* }
    }};
}
