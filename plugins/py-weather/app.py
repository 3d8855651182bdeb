"""py-weather: current weather from an Open-Meteo-style API, cached in
key-value for ten minutes (a Pincer tool written in Python)."""

import pincer_sdk as pincer
from pincer_sdk import PermanentError, clock, http, kv, log

CACHE_MS = 10 * 60 * 1000
DEFAULT_API = "https://api.open-meteo.com"


def _coord(args, key, bound):
    v = args.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not -bound <= v <= bound:
        raise PermanentError(f"{key} must be a number in -{bound}..{bound}")
    return round(float(v), 2)


class Weather(pincer.ToolPlugin):
    name = "py-weather"
    description = (
        "Current temperature (°C) and wind speed (km/h) at a latitude/longitude. "
        "Answers from a ten-minute cache when it can."
    )
    schema = {
        "type": "object",
        "properties": {
            "latitude": {"type": "number", "minimum": -90, "maximum": 90},
            "longitude": {"type": "number", "minimum": -180, "maximum": 180},
            "api_base": {"type": "string", "description": "API root (default https://api.open-meteo.com)"},
        },
        "required": ["latitude", "longitude"],
        "additionalProperties": False,
    }

    def call(self, args):
        lat = _coord(args, "latitude", 90)
        lon = _coord(args, "longitude", 180)
        api = str(args.get("api_base") or DEFAULT_API).rstrip("/")
        key = f"weather/{lat:.2f},{lon:.2f}"
        now = clock.now_ms()
        cached = kv.get_json(key)
        if cached is not None and now - cached["fetched_at_ms"] < CACHE_MS:
            log.debug("cache hit", key=key)
            return dict(cached, cached=True)
        url = f"{api}/v1/forecast?latitude={lat}&longitude={lon}&current_weather=true"
        body = http.get(url, timeout_ms=10_000).raise_for_status().json()
        current = body.get("current_weather")
        if not isinstance(current, dict):
            raise PermanentError("the weather API answered without current_weather")
        result = {
            "latitude": lat,
            "longitude": lon,
            "temperature_c": current.get("temperature"),
            "windspeed_kmh": current.get("windspeed"),
            "fetched_at_ms": now,
        }
        kv.set_json(key, result)
        log.info("fetched weather", key=key, temperature_c=result["temperature_c"])
        return dict(result, cached=False)


Plugin, Tool = pincer.export_tool(Weather)
