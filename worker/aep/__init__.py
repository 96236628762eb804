"""Adobe Experience Platform clients: IMS tokens and the streaming (DCS) API."""
