"""The trainer's tables (SQLAlchemy 2.0 typed models). Changes go through a new migration."""

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass
