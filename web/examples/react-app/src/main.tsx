/** The example app: Engram's VoiceChat on engram-voice v2, served from the service's origin (`make run`). */
import type { VoiceClientOptions } from "@engram/voice-client";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { VoiceChat } from "./VoiceChat.js";

// Same origin as the service in local mode: no base URL, no bearer token.
const options: VoiceClientOptions = { baseUrl: "" };

const root = document.getElementById("root");
if (root) createRoot(root).render(<StrictMode><VoiceChat agent="elena" {...options} /></StrictMode>);
