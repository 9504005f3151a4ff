"""Media-off calls (``EMULATOR_MEDIA=off``): an SDP answer without an aiortc peer.

For load tests that hold hundreds of Azure OpenAI calls on a small machine: the offer is
parsed and checked as aiortc would (ICE credentials and a DTLS fingerprint on every media
section) and answered with a well-formed SDP answer, but no peer, ICE or DTLS exists. The
call's scripted conversation then plays on a timer to its sideband only.
"""

from __future__ import annotations

import secrets

from aiortc.sdp import SessionDescription

__all__ = ["answer_without_media"]

_FINGERPRINT = ":".join(f"{b:02X}" for b in bytes(range(32)))
_OFFER_ERRORS = (AssertionError, ValueError, IndexError, KeyError, TypeError)


def answer_without_media(offer_sdp: str) -> str:
    """Validate ``offer_sdp`` and return an SDP answer for it; ValueError when unusable."""
    try:
        offer = SessionDescription.parse(offer_sdp)
    except _OFFER_ERRORS as exc:
        raise ValueError(str(exc) or type(exc).__name__) from exc
    if not offer.media:
        raise ValueError("The offer has no media section.")
    ufrag, pwd = secrets.token_hex(4), secrets.token_hex(12)
    lines = ["v=0", f"o=- {secrets.randbelow(10**12)} 0 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    mids = [media.rtp.muxId or str(index) for index, media in enumerate(offer.media)]
    lines.append("a=group:BUNDLE " + " ".join(mids))
    lines.append("a=msid-semantic:WMS *")
    for media, mid in zip(offer.media, mids, strict=True):
        if (
            media.ice is None
            or not media.ice.usernameFragment
            or not media.dtls
            or not media.dtls.fingerprints
        ):
            raise ValueError(f"Media section {mid!r} lacks ICE credentials or a fingerprint.")
        if media.kind == "audio":
            lines += [
                "m=audio 9 UDP/TLS/RTP/SAVPF 111",
                "c=IN IP4 0.0.0.0",
                "a=sendrecv",
                f"a=mid:{mid}",
                "a=rtcp-mux",
                "a=rtpmap:111 opus/48000/2",
            ]
        elif media.kind == "application":
            lines += [
                "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
                "c=IN IP4 0.0.0.0",
                f"a=mid:{mid}",
                "a=sctp-port:5000",
                "a=max-message-size:65536",
            ]
        else:
            lines += [f"m={media.kind} 0 {media.profile} 0", "c=IN IP4 0.0.0.0", f"a=mid:{mid}"]
            continue
        lines += [
            f"a=ice-ufrag:{ufrag}",
            f"a=ice-pwd:{pwd}",
            f"a=fingerprint:sha-256 {_FINGERPRINT}",
            "a=setup:active",
        ]
    return "\r\n".join(lines) + "\r\n"
