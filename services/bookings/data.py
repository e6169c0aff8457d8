"""Example data served by the bookings API."""

from __future__ import annotations

BOOKINGS = (
    {"id": "bk_1001", "customer_id": "cu_201", "service": "Deep clean, 3 bedrooms",
     "starts_at": "2026-12-02T09:00:00Z", "duration_minutes": 180, "status": "confirmed"},
    {"id": "bk_1002", "customer_id": "cu_202", "service": "Window cleaning",
     "starts_at": "2026-12-03T14:30:00Z", "duration_minutes": 90, "status": "confirmed"},
    {"id": "bk_1003", "customer_id": "cu_201", "service": "Regular clean",
     "starts_at": "2026-12-09T09:00:00Z", "duration_minutes": 120, "status": "pending"},
)

CUSTOMERS = (
    {"id": "cu_201", "name": "Jordan Reyes", "email": "jordan.reyes@example.com",
     "phone": "+1 555 0101"},
    {"id": "cu_202", "name": "Sam Okafor", "email": "sam.okafor@example.com",
     "phone": "+1 555 0102"},
)
