"""Bookings/orders, complaints, the case timeline and call dispositions."""
